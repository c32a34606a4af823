"""phantom/cohort.py: the written nnU-Net dataset, its independence of the cohort size, existing outputs, resume,
CLI split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from globalmask import phantom
from globalmask.errors import OutputError
from globalmask.io import read_volume
from globalmask.phantom import (
    THORAX_CHAMBER_LABELS,
    make_phantom_case,
    make_phantom_dataset,
)


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
    expected = [f"phantom_thorax_{i:03d}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == expected
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
    assert main(["phantom", "--kind", "thorax", "--cases", "5", "--shape", "24", "24", "24", "--split", "3:1:1",
                 "--out", str(out)]) == 0
    split = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (3, 1, 1)
    for bad in ("3:1", "a:b:c", "3:-1:1", "0:0:0"):
        assert main(["phantom", "--cases", "5", "--split", bad, "--out", str(tmp_path / "bad")]) == 2
        assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_a_finished_cohort_missing_a_case_file_gets_it_back(tmp_path):
    """The identical call on a finished dataset regenerates a deleted case file, the same bytes of voxels."""
    out = make_phantom_dataset(tmp_path / "ds", cases=2, seed=1, shape=(20, 20, 20))
    image = out / "imagesTr" / "phantom_headneck_001_0000.nii.gz"
    label = out / "labelsTr" / "phantom_headneck_000.nii.gz"
    before = read_volume(image).array, read_volume(label).array
    image.unlink()
    label.unlink()
    assert make_phantom_dataset(out, cases=2, seed=1, shape=(20, 20, 20)) == out
    np.testing.assert_array_equal(read_volume(image).array, before[0])
    np.testing.assert_array_equal(read_volume(label).array, before[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
    ({"cases": True}, "cases must be an integer, got True"),
    ({"cases": 0}, "a phantom cohort needs at least one case, got cases=0"),
])
def test_a_bad_seed_or_case_count_is_refused_by_name_before_anything_is_written(tmp_path, kwargs, message):
    from globalmask.errors import GlobalmaskError

    with pytest.raises(GlobalmaskError) as exc:
        make_phantom_dataset(tmp_path / "ds", **{"cases": 1, "shape": (20, 20, 20), **kwargs})
    assert message in str(exc.value)
    assert not (tmp_path / "ds").exists()


def test_the_dataset_is_named_after_its_kind_and_chambers(tmp_path):
    meta = json.loads((make_phantom_dataset(tmp_path / "t", kind="thorax", cases=1, shape=(20, 20, 20),
                                            chambers=True) / "dataset.json").read_text(encoding="utf-8"))
    assert meta["name"] == "GlobalmaskPhantomThoraxChambers" and "acquisition" not in meta
    meta = json.loads((make_phantom_dataset(tmp_path / "h", cases=1, shape=(20, 20, 20)) / "dataset.json")
                      .read_text(encoding="utf-8"))
    assert meta["name"] == "GlobalmaskPhantomHeadNeck" and "acquisition" not in meta
