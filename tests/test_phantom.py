"""The digital phantom cohort: determinism, labels, geometry, anatomy, intensities, dataset layout."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from globalmask import phantom
from globalmask.errors import GlobalmaskError, OutputError
from globalmask.io import read_volume
from globalmask.phantom import (
    HEADNECK_LABELS,
    THORAX_CHAMBER_LABELS,
    THORAX_LABELS,
    make_phantom_case,
    make_phantom_dataset,
)

SMALL = (48, 48, 48)
VARIANTS = [("headneck", False), ("thorax", False), ("thorax", True)]


def _labels(kind: str, chambers: bool) -> dict[str, int]:
    return HEADNECK_LABELS if kind == "headneck" else (THORAX_CHAMBER_LABELS if chambers else THORAX_LABELS)


def _centroid_world(label, value: int) -> np.ndarray:
    idx = np.argwhere(label.array == value)
    assert len(idx), f"label {value} is empty"
    return (label.affine @ np.r_[idx.mean(axis=0), 1.0])[:3]


def _volume_ml(label, value: int) -> float:
    return float((label.array == value).sum() * np.prod(label.spacing) / 1000.0)


_CACHE: dict = {}


def _case(kind, index, seed=0, shape=SMALL, chambers=False):
    key = (kind, index, seed, shape, chambers)
    if key not in _CACHE:
        _CACHE[key] = make_phantom_case(kind, index, seed, shape, chambers)
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------
# label vocabularies


def test_label_maps_are_the_declared_ones():
    assert HEADNECK_LABELS == {
        "background": 0, "brainstem": 1, "spinal_cord": 2, "parotid_left": 3, "parotid_right": 4, "mandible": 5
    }
    assert THORAX_LABELS == {"background": 0, "heart": 1, "lung_left": 2, "lung_right": 3, "aorta": 4, "spinal_cord": 5}
    assert THORAX_CHAMBER_LABELS["background"] == 0
    assert {"heart_lv", "heart_rv", "heart_la", "heart_ra", "lung_left", "lung_right", "aorta", "spinal_cord"} <= set(
        THORAX_CHAMBER_LABELS
    )
    for labels in (HEADNECK_LABELS, THORAX_LABELS, THORAX_CHAMBER_LABELS):
        assert sorted(labels.values()) == list(range(len(labels)))


# ----------------------------------------------------------------------------------------------
# arrays and geometry


@pytest.mark.parametrize("kind,chambers", VARIANTS)
def test_case_dtypes_shape_and_ras_affine(kind, chambers):
    shape = (40, 44, 36)
    ct, lab = make_phantom_case(kind, 3, 0, shape, chambers)
    assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert ct.shape == shape and lab.shape == shape
    np.testing.assert_array_equal(ct.affine, lab.affine)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    assert np.count_nonzero(ct.affine[:3, :3] - np.diag(np.diag(ct.affine[:3, :3]))) == 0
    assert np.all(np.diag(ct.affine)[:3] > 0)
    assert ct.array.min() >= -1024 and ct.array.max() <= 3071


def test_spacing_and_origin_vary_per_case_but_field_of_view_does_not_depend_on_grid():
    affines = [_case("headneck", i)[0].affine for i in range(4)]
    spacings = {tuple(np.round(np.diag(a)[:3], 6)) for a in affines}
    origins = {tuple(np.round(a[:3, 3], 3)) for a in affines}
    assert len(spacings) == 4 and len(origins) == 4
    for a in affines:  # in-plane isotropic, slice spacing separate, ranges scaled by 64/48
        sx, sy, sz = np.diag(a)[:3]
        assert sx == pytest.approx(sy)
        assert 3.9 * 64 / 48 - 1e-6 <= sx <= 4.6 * 64 / 48 + 1e-6
        assert 3.7 * 64 / 48 - 1e-6 <= sz <= 4.5 * 64 / 48 + 1e-6
    # the same case on two grids covers the same field of view and holds the same anatomy (in mL)
    small, big = _case("headneck", 1)[1], make_phantom_case("headneck", 1, 0, (64, 64, 64))[1]
    fov_small = np.diag(small.affine)[:3] * 48
    fov_big = np.diag(big.affine)[:3] * 64
    np.testing.assert_allclose(fov_small, fov_big)
    for name in ("brainstem", "mandible", "parotid_left"):
        v = HEADNECK_LABELS[name]
        assert _volume_ml(small, v) == pytest.approx(_volume_ml(big, v), rel=0.2), name


# ----------------------------------------------------------------------------------------------
# determinism


@pytest.mark.parametrize("kind", ["headneck", "thorax"])
def test_same_arguments_give_identical_cases(kind):
    a_ct, a_lab = make_phantom_case(kind, 2, 7, SMALL)
    b_ct, b_lab = make_phantom_case(kind, 2, 7, SMALL)
    np.testing.assert_array_equal(a_ct.array, b_ct.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    np.testing.assert_array_equal(a_ct.affine, b_ct.affine)


def test_seeds_and_indices_give_different_cases():
    base_ct, base_lab = _case("headneck", 0, seed=0)
    for other in (_case("headneck", 0, seed=1), _case("headneck", 1, seed=0)):
        assert not np.array_equal(base_ct.affine, other[0].affine)
        assert not np.array_equal(base_lab.array, other[1].array)
    # headneck and thorax case 0 of the same seed are unrelated streams
    assert not np.array_equal(base_ct.affine, _case("thorax", 0)[0].affine)


def test_chambers_only_change_how_the_heart_is_labelled():
    ct, whole = _case("thorax", 4)
    ct_c, split = _case("thorax", 4, chambers=True)
    np.testing.assert_array_equal(ct.array, ct_c.array)
    heart = whole.array == THORAX_LABELS["heart"]
    chamber_values = [THORAX_CHAMBER_LABELS[k] for k in ("heart_lv", "heart_rv", "heart_la", "heart_ra")]
    np.testing.assert_array_equal(heart, np.isin(split.array, chamber_values))
    for name in ("lung_left", "lung_right", "aorta", "spinal_cord"):
        np.testing.assert_array_equal(whole.array == THORAX_LABELS[name], split.array == THORAX_CHAMBER_LABELS[name])


# Output pinned bit for bit: sha256 of (ct, label, affine) little-endian bytes, as produced by
# PHANTOM_VERSION 1. A refactor must keep these; a deliberate change of what the generator makes
# must bump PHANTOM_VERSION (so cached datasets are refused) and re-pin them.
PINNED = {
    ("headneck", 1, 0, (24, 24, 24), False): (
        "86b34a9fde452d1fa82050dbe9dcaeefc531959d8c86307cb8c95fb7ab9062ab",
        "d09b312a9bb4edb835cbe652b2ce574eb86086cbc9852f9574a242d933d08263",
        "08bbe073c521cca65cfbb80682146cba6122b96b7bac6d10250fc4475c409fe0",
    ),
    ("thorax", 2, 3, (20, 24, 28), False): (
        "61367144f12ae2aedbcdd457f457ded78e583a81830a11f2225fcecd2ac2d5a2",
        "d495dc3bd72b677d3aff2b9869d777bd89e00139360d644d649a2205e7e321d1",
        "ab1fbefc785c73b66f2fde1202f8b759874ff96c5ac3fc41b144e23e829d237d",
    ),
    ("thorax", 2, 3, (20, 24, 28), True): (
        "61367144f12ae2aedbcdd457f457ded78e583a81830a11f2225fcecd2ac2d5a2",
        "a9fd50a1c6fd4230fe5671e980f317bb401a50fb8da972e1481d132ff9d61499",
        "ab1fbefc785c73b66f2fde1202f8b759874ff96c5ac3fc41b144e23e829d237d",
    ),
}


def _sha256(array: np.ndarray) -> str:
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return hashlib.sha256(little.tobytes()).hexdigest()


@pytest.mark.parametrize("args", list(PINNED), ids=lambda a: f"{a[0]}-{a[1]}-{a[2]}-{'x'.join(map(str, a[3]))}-{a[4]}")
def test_output_is_pinned_bit_for_bit(args):
    assert phantom.PHANTOM_VERSION == 1, "PHANTOM_VERSION changed: re-pin these hashes"
    ct, lab = make_phantom_case(*args)
    got = (_sha256(ct.array), _sha256(lab.array), _sha256(ct.affine))
    assert got == PINNED[args], f"phantom output changed for {args}: bump PHANTOM_VERSION and re-pin"
    np.testing.assert_array_equal(lab.affine, ct.affine)


# ----------------------------------------------------------------------------------------------
# labels present, exact values, plausible sizes


@pytest.mark.parametrize("kind,chambers", VARIANTS)
@pytest.mark.parametrize("shape", [SMALL, (64, 64, 64)])
def test_every_label_is_present_in_every_case(kind, chambers, shape):
    labels = _labels(kind, chambers)
    n = 6 if shape == SMALL else 3
    for i in range(n):
        _, lab = _case(kind, i, shape=shape, chambers=chambers)
        values = set(np.unique(lab.array).tolist())
        assert values == set(labels.values()), (kind, i, values)


@pytest.mark.parametrize(
    "kind,name,lo,hi",
    [
        ("headneck", "brainstem", 12, 45),
        ("headneck", "spinal_cord", 3, 20),
        ("headneck", "parotid_left", 8, 45),
        ("headneck", "parotid_right", 8, 45),
        ("headneck", "mandible", 30, 85),
        ("thorax", "heart", 350, 850),
        ("thorax", "lung_left", 700, 2200),
        ("thorax", "lung_right", 900, 2600),
        ("thorax", "aorta", 50, 200),
        ("thorax", "spinal_cord", 8, 35),
    ],
)
def test_label_volumes_are_realistic(kind, name, lo, hi):
    labels = _labels(kind, False)
    for i in range(4):
        v = _volume_ml(_case(kind, i)[1], labels[name])
        assert lo <= v <= hi, f"{kind} case {i} {name}: {v:.1f} mL outside [{lo}, {hi}]"


# ----------------------------------------------------------------------------------------------
# anatomy: orientation in RAS+ world coordinates (+x = patient right, +y anterior, +z superior)


def test_headneck_orientation():
    for i in range(5):
        _, lab = _case("headneck", i)
        left = _centroid_world(lab, HEADNECK_LABELS["parotid_left"])
        right = _centroid_world(lab, HEADNECK_LABELS["parotid_right"])
        cord = _centroid_world(lab, HEADNECK_LABELS["spinal_cord"])
        stem = _centroid_world(lab, HEADNECK_LABELS["brainstem"])
        mandible = _centroid_world(lab, HEADNECK_LABELS["mandible"])
        assert left[0] < right[0] - 50  # patient left is nibabel's 'L': smaller x in RAS+
        assert cord[1] < mandible[1] - 40  # cord posterior to the mandible
        assert stem[2] > cord[2] + 30  # brainstem above the bulk of the cord
        assert abs(stem[0] - cord[0]) < 15  # both midline
        assert min(left[0], right[0]) < mandible[0] < max(left[0], right[0])
        # brainstem sits just on top of the cord: the cord's top slice touches the brainstem's bottom
        zc = np.argwhere(lab.array == HEADNECK_LABELS["spinal_cord"])[:, 2].max()
        zb = np.argwhere(lab.array == HEADNECK_LABELS["brainstem"])[:, 2].min()
        assert zb <= zc + 2


def test_thorax_orientation():
    for i in range(5):
        _, lab = _case("thorax", i)
        heart = _centroid_world(lab, THORAX_LABELS["heart"])
        cord = _centroid_world(lab, THORAX_LABELS["spinal_cord"])
        left = _centroid_world(lab, THORAX_LABELS["lung_left"])
        right = _centroid_world(lab, THORAX_LABELS["lung_right"])
        assert left[0] < cord[0] < right[0]
        assert heart[0] < cord[0]  # the heart sits on the patient's left
        assert heart[1] > cord[1] + 40  # anterior to the spine
        assert _volume_ml(lab, THORAX_LABELS["lung_left"]) < _volume_ml(lab, THORAX_LABELS["lung_right"])
    _, split = _case("thorax", 0, chambers=True)
    lv = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_lv"])
    rv = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_rv"])
    la = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_la"])
    ra = _centroid_world(split, THORAX_CHAMBER_LABELS["heart_ra"])
    assert rv[1] > lv[1]  # right ventricle anterior
    assert lv[0] < rv[0]  # left ventricle to the patient's left
    assert la[1] < lv[1]  # left atrium posterior
    assert ra[0] > la[0]  # right atrium to the patient's right


# ----------------------------------------------------------------------------------------------
# intensities: GBM-friendly tissue classes, unreliable absolute HU across scanners


def _air_hu(ct) -> float:
    a = ct.array
    corners = [a[:3, :3], a[:3, -3:], a[-3:, :3], a[-3:, -3:]]
    return float(np.mean([c.mean() for c in corners]))


@pytest.mark.parametrize("kind", ["headneck", "thorax"])
def test_tissue_classes_survive_the_scanner_transform(kind):
    labels = _labels(kind, False)
    soft = ["brainstem", "spinal_cord", "parotid_left", "parotid_right"] if kind == "headneck" else ["heart", "aorta", "spinal_cord"]
    for i in range(8):
        ct, lab = _case(kind, i)
        assert _air_hu(ct) < -700, (kind, i)
        for name in soft:
            values = ct.array[lab.array == labels[name]]
            assert values.mean() > -300, (kind, i, name)
            assert np.mean(values > -300) > 0.9, (kind, i, name)  # a -300 HU GBM keeps them
        if kind == "headneck":
            assert np.median(ct.array[lab.array == labels["mandible"]]) > 250, i
        else:
            for name in ("lung_left", "lung_right"):
                assert ct.array[lab.array == labels[name]].mean() < -500, (i, name)


def test_organ_intensity_is_unreliable_across_scanners():
    for kind, name in (("headneck", "parotid_left"), ("thorax", "spinal_cord")):
        means = [
            float(_case(kind, i)[0].array[_case(kind, i)[1].array == _labels(kind, False)[name]].mean()) for i in range(8)
        ]
        assert max(means) - min(means) > 30, (kind, name, means)


def test_noise_and_blur_differ_between_cases():
    # air outside the body is flat -1000 before the scanner: its spread is the scanner noise
    stds = [float(_case("headneck", i)[0].array[:4, :4].std()) for i in range(6)]
    assert max(stds) > 1.5 * min(stds)


# ----------------------------------------------------------------------------------------------
# speed


# ----------------------------------------------------------------------------------------------
# argument checks


def test_bad_arguments_are_refused():
    with pytest.raises(GlobalmaskError, match="kind"):
        make_phantom_case("pelvis", 0, 0)
    with pytest.raises(GlobalmaskError, match="chambers"):
        make_phantom_case("headneck", 0, 0, chambers=True)
    with pytest.raises(GlobalmaskError, match="shape"):
        make_phantom_case("headneck", 0, 0, (8, 64, 64))
    with pytest.raises(GlobalmaskError, match="shape"):
        make_phantom_case("headneck", 0, 0, (64, 64))  # type: ignore[arg-type]
    with pytest.raises(GlobalmaskError, match="seed"):
        make_phantom_case("headneck", 0, -1)
    with pytest.raises(GlobalmaskError, match="case"):
        make_phantom_dataset("/nonexistent-never-created", cases=0)


# ----------------------------------------------------------------------------------------------
# the written dataset


def test_dataset_layout_json_and_round_trip(tmp_path):
    out = tmp_path / "ds"
    shape = (32, 32, 28)
    path = make_phantom_dataset(out, kind="thorax", cases=3, seed=5, shape=shape, chambers=True)
    assert path == out
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == THORAX_CHAMBER_LABELS
    assert meta["numTraining"] == 3
    assert meta["file_ending"] == ".nii.gz"
    assert meta["phantom"] == {"kind": "thorax", "seed": 5, "cases": 3, "shape": [32, 32, 28], "chambers": True}
    assert "thorax" in meta["description"] and "seed=5" in meta["description"] and "32x32x28" in meta["description"]
    assert isinstance(meta["name"], str) and meta["name"]
    assert not (out / "splits.json").exists()
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"phantom_thorax_{i:03d}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"phantom_thorax_{i:03d}.nii.gz" for i in range(3)]
    assert not list(out.glob(".phantom*"))
    for i in range(3):
        ct, lab = make_phantom_case("thorax", i, 5, shape, chambers=True)
        img = read_volume(out / "imagesTr" / f"phantom_thorax_{i:03d}_0000.nii.gz")
        seg = read_volume(out / "labelsTr" / f"phantom_thorax_{i:03d}.nii.gz")
        assert img.array.dtype == np.int16 and seg.array.dtype == np.uint8
        np.testing.assert_array_equal(img.array, ct.array)
        np.testing.assert_array_equal(seg.array, lab.array)
        np.testing.assert_allclose(img.affine, ct.affine, atol=1e-4)
        np.testing.assert_allclose(seg.affine, ct.affine, atol=1e-4)
    from globalmask.dataset import load_dataset

    ds = load_dataset(out)
    assert sorted(ds.cases) == [f"phantom_thorax_{i:03d}" for i in range(3)]
    assert ds.labels == THORAX_CHAMBER_LABELS


def test_case_is_the_same_whatever_the_cohort_size(tmp_path):
    a = make_phantom_dataset(tmp_path / "a", cases=2, seed=3, shape=(24, 24, 24))
    b = make_phantom_dataset(tmp_path / "b", cases=4, seed=3, shape=(24, 24, 24))
    for sub, name in (("imagesTr", "phantom_headneck_001_0000.nii.gz"), ("labelsTr", "phantom_headneck_001.nii.gz")):
        va, vb = read_volume(a / sub / name), read_volume(b / sub / name)
        np.testing.assert_array_equal(va.array, vb.array)
        np.testing.assert_array_equal(va.affine, vb.affine)


def test_existing_outputs(tmp_path):
    shape = (20, 20, 20)
    # a non-empty folder that is not ours is refused, and left untouched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        make_phantom_dataset(foreign, cases=1, shape=shape)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    make_phantom_dataset(empty, cases=1, shape=shape)
    assert (empty / "dataset.json").exists()
    # the identical call returns the folder without rewriting it (even with a splits.json beside)
    (empty / "splits.json").write_text("{}")
    before = {p: p.stat().st_mtime_ns for p in empty.rglob("*")}
    assert make_phantom_dataset(empty, cases=1, shape=shape) == empty
    assert {p: p.stat().st_mtime_ns for p in empty.rglob("*")} == before
    # a different call onto an existing dataset is refused
    for kwargs in ({"cases": 2}, {"seed": 1, "cases": 1}, {"kind": "thorax", "cases": 1}):
        with pytest.raises(OutputError):
            make_phantom_dataset(empty, shape=shape, **kwargs)
    # out that is a file
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError):
        make_phantom_dataset(f, cases=1, shape=shape)


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    shape = (20, 20, 20)
    real = phantom.make_phantom_case

    def crash_on_two(kind, index, *args, **kwargs):
        if index == 2:
            raise KeyboardInterrupt
        return real(kind, index, *args, **kwargs)

    monkeypatch.setattr(phantom.cohort, "make_phantom_case", crash_on_two)
    with pytest.raises(KeyboardInterrupt):
        make_phantom_dataset(out, cases=4, shape=shape)
    assert not (out / "dataset.json").exists()
    assert len(list((out / "imagesTr").iterdir())) == 2
    # a different call does not adopt the half-written folder
    monkeypatch.setattr(phantom.cohort, "make_phantom_case", real)
    with pytest.raises(OutputError):
        make_phantom_dataset(out, cases=4, seed=9, shape=shape)
    make_phantom_dataset(out, cases=4, shape=shape, progress=True)
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 4
    assert len(list((out / "labelsTr").iterdir())) == 4
    assert not list(out.glob(".phantom*"))
    ct, _ = real("headneck", 3, 0, shape)
    np.testing.assert_array_equal(read_volume(out / "imagesTr" / "phantom_headneck_003_0000.nii.gz").array, ct.array)


def test_cli_phantom_split_proportions(tmp_path):
    from globalmask.cli import main

    out = tmp_path / "ph"
    assert main(["phantom", "--kind", "thorax", "--cases", "5", "--shape", "24", "24", "24", "--split", "3:1:1", "--out", str(out)]) == 0
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (3, 1, 1)
    for bad in ("3:1", "a:b:c", "3:-1:1", "0:0:0"):
        assert main(["phantom", "--cases", "5", "--split", bad, "--out", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists()  # refused before anything is written
