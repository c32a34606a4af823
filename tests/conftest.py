"""Shared by every test module: real-data paths and skips, tiny synthetic datasets, and the fixtures
that several modules use (a phantom dataset, a trained model, a DICOM series), each built once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from globalmask.dataset import Split, load_dataset, make_split, save_split
from globalmask.dicom_rt import write_ct_series
from globalmask.io import Volume, read_volume, write_volume
from globalmask.model import NetConfig
from globalmask.phantom import make_phantom_case, make_phantom_dataset
from globalmask.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OPENKBP = SHARED / "Dataset501_OpenKBPHeadNeck"
CHEST = SHARED / "ChestCTA_TotalSegmentatorExample"

needs_openkbp = pytest.mark.skipif(
    not (OPENKBP / "dataset.json").exists(),
    reason=f"real OpenKBP data not found at {OPENKBP} (only present in CI and developer checkouts)",
)
needs_chest = pytest.mark.skipif(
    not (CHEST / "ct.nii.gz").exists(), reason=f"real chest CT not found at {CHEST}"
)

#: networks of the end-to-end tests: a small one (seconds per run) and the demo one (the `trained` fixture)
SMALL_NET = NetConfig(channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)
DEMO_NET = NetConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)


def oblique_affine(spacing=(1.5, 2.0, 3.0), angle_deg=30.0, origin=(10.0, -20.0, 5.0)) -> np.ndarray:
    """A rotated (about z) anisotropic affine, for geometry tests."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def make_tiny_dataset(root: Path, n: int = 6, shape=(24, 24, 20), seed: int = 0) -> Path:
    """A tiny nnU-Net dataset: a body cylinder in air with two box 'organs' at fixed anatomy."""
    import json

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        cx, cy = shape[0] / 2 + rng.integers(-1, 2), shape[1] / 2 + rng.integers(-1, 2)
        body = (x - cx) ** 2 + (y - cy) ** 2 < (shape[0] / 3) ** 2
        ct = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-20, 20, size=shape).astype(np.int16)
        lab = np.zeros(shape, np.uint8)
        lab[int(cx) - 5 : int(cx) - 1, int(cy) - 2 : int(cy) + 2, 5:15] = 1
        lab[int(cx) + 2 : int(cx) + 6, int(cy) - 2 : int(cy) + 2, 5:15] = 2
        ct[lab == 1] += 30
        aff = np.diag([2.0, 2.0, 2.5, 1.0])
        write_volume(Volume(ct, aff), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_volume(Volume(lab, aff), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "left": 1, "right": 2},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


# ----------------------------------------------------------------------------------------------
# fixtures shared by several test modules (session-scoped: built once per test run)


@pytest.fixture(scope="session")
def phantom_ds(tmp_path_factory):
    """An 8-case head-and-neck phantom dataset (48^3) with a fixed 5/1/2 split."""
    root = make_phantom_dataset(
        tmp_path_factory.mktemp("ph") / "phantom", kind="headneck", cases=8, seed=3, shape=(48, 48, 48)
    )
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(5, 1, 2)), root / "splits.json")
    return load_dataset(root)


@pytest.fixture(scope="session")
def trained(phantom_ds, tmp_path_factory):
    """A small CT+GBM model trained for 250 steps on 4 phantom cases (about 35 s on 2 cores)."""
    run = tmp_path_factory.mktemp("runs") / "ctgbm"
    cfg = TrainConfig(mode="ct+gbm", train_cases=4, seed=0, steps=250, val_every=50, net=DEMO_NET)
    result = train(phantom_ds, run, cfg, progress=False)
    return result


@pytest.fixture(scope="session")
def phantom_series(tmp_path_factory):
    """A head-and-neck phantom written as a CT series, with its labels on the series' grid."""
    folder = tmp_path_factory.mktemp("dcm") / "patient"
    ct, lab = make_phantom_case("headneck", 0, 0, shape=(48, 48, 32))
    files = write_ct_series(ct, folder / "ct")
    volume = read_volume(folder / "ct")
    return volume, volume.with_array(lab.array), files


#: four orientations of one anisotropic grid (RAS, LPS, PLI, oblique), keyed by name for test ids
ORIENTED_AFFINES = {
    "RAS": np.diag([1.5, 2.0, 3.0, 1.0]),
    "LPS": np.diag([-1.5, -2.0, 3.0, 1.0]),
    "PLI": np.array([[0, -2.0, 0, 0], [-1.5, 0, 0, 0], [0, 0, -3.0, 0], [0, 0, 0, 1]]),
    "oblique": oblique_affine(),
}


def phantom_ct_and_labels(shape=(40, 34, 30), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (x - 20) ** 2 / 150 + (y - 16) ** 2 / 90 < 1
    ct = np.where(body, rng.normal(40, 30, shape), -1000 + rng.normal(0, 5, shape))
    ct[18:26, 10:15, 8:20] = 700  # bone, off-centre
    label = np.zeros(shape, np.uint8)
    label[18:26, 10:15, 8:20] = 1
    label[10:14, 20:24, 5:25] = 2
    return np.asfortranarray(ct.astype(np.int16)), np.asfortranarray(label)


AFF_2MM = np.diag([2.0, 2.0, 2.0, 1.0])


def percentile_dataset(root: Path) -> Path:
    """8 cases; case i has its 60 labelled voxels at 100*i .. 100*i + 59 HU."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(8):
        ct = np.full((12, 12, 12), -1000.0, dtype=np.float32)
        lab = np.zeros((12, 12, 12), dtype=np.uint8)
        lab[4:8, 3:8, 3:6] = 1  # 4 x 5 x 3 = 60 voxels
        ct[lab == 1] = 100.0 * i + np.arange(60)
        write_volume(Volume(ct, AFF_2MM), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_volume(Volume(lab, AFF_2MM), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "organ": 1},
                "numTraining": 8,
                "file_ending": ".nii.gz",
            }
        ),
        encoding="utf-8",
    )
    save_split(
        Split(
            train=("case_000", "case_001", "case_002", "case_003"),
            validation=("case_004", "case_005"),
            test=("case_006", "case_007"),
        ),
        root / "splits.json",
    )
    return root
