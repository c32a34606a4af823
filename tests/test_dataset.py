"""dataset.py: nnU-Net and plain-folder datasets, seeded and fixed splits, their validation, nested training subsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from globalmask.dataset import (
    Split,
    load_dataset,
    load_split,
    make_split,
    read_labels_file,
    resolve_split,
    save_split,
    select_training_cases,
    subset_ids,
    validate_split,
)
from globalmask.errors import DatasetError
from globalmask.io import (
    Volume,
    read_volume,
    write_volume,
)

from .conftest import OPENKBP, make_tiny_dataset, needs_openkbp


def test_nnunet_dataset_and_seeded_split(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=10)
    ds = load_dataset(root)
    assert len(ds) == 10 and ds.structures == {"left": 1, "right": 2}
    split, source = resolve_split(ds, seed=3)
    assert "seeded" in source
    assert sorted([*split.train, *split.validation, *split.test]) == sorted(ds.cases)
    assert (len(split.train), len(split.validation), len(split.test)) == (6, 2, 2)
    assert make_split(ds.cases, seed=3) == split  # deterministic
    assert make_split(ds.cases, seed=4) != split


def test_split_validation_errors():
    ids = ["a", "b", "c", "d"]
    with pytest.raises(DatasetError, match="not in the dataset"):
        validate_split({"train": ["a", "x"], "validation": [], "test": []}, ids)
    with pytest.raises(DatasetError, match="in both 'train' and 'test'"):
        validate_split({"train": ["a", "b"], "validation": ["c"], "test": ["b"]}, ids)
    with pytest.raises(DatasetError, match="more than once"):
        validate_split({"train": ["a", "a"], "validation": [], "test": []}, ids)


def test_training_subsets_are_seeded_and_nested_in_train():
    ids = [f"c{i}" for i in range(20)]
    a = select_training_cases(ids, 4, seed=1)
    assert a == select_training_cases(list(reversed(ids)), 4, seed=1)  # order of the list does not matter
    assert len(set(a)) == 4 and set(a) <= set(ids)
    assert select_training_cases(ids, 4, seed=2) != a
    assert select_training_cases(ids, None, seed=2) == sorted(ids)


def test_plain_folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("p1", "p2"):
        write_volume(Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "images" / f"{name}.nrrd")
        lab = np.zeros((4, 4, 4), np.uint8)
        lab[1, 1, 1] = 3
        write_volume(Volume(lab, np.eye(4)), tmp_path / "labels" / f"{name}.nii.gz")
    ds = load_dataset(tmp_path)
    assert set(ds.cases) == {"p1", "p2"} and ds.labels == {"background": 0, "label_3": 3}
    (tmp_path / "labels.json").write_text(json.dumps({"liver": 3}))
    assert load_dataset(tmp_path).labels == {"background": 0, "liver": 3}


@needs_openkbp
def test_openkbp_dataset_loads_with_its_fixed_split():
    ds = load_dataset(OPENKBP)
    assert len(ds) == 46
    assert ds.structures == {"brainstem": 1, "spinal_cord": 2, "parotid_right": 3, "parotid_left": 4, "mandible": 5}
    split, source = resolve_split(ds)
    assert source.endswith("splits.json")
    assert (len(split.train), len(split.validation), len(split.test)) == (26, 10, 10)
    vol = read_volume(ds.cases["openkbp_001"].image)
    assert vol.shape == (128, 128, 128) and nib.aff2axcodes(vol.affine) == ("P", "L", "I")


def test_extra_channels_are_named_in_a_warning_and_ct_is_case_insensitive(tmp_path):
    """Issue 25: a dataset with a second channel trained as CT without a word."""
    root = make_tiny_dataset(tmp_path / "ds", n=3)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["channel_names"] = {"0": "ct", "1": "noNorm"}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.warns(
        UserWarning, match=r"declares 2 input channels; globalmask reads channel 0 \(CT\) only and ignores 1: noNorm"
    ):
        ds = load_dataset(root)
    assert sorted(ds.cases) == ["case_000", "case_001", "case_002"]


def test_a_dataset_argument_may_be_an_nnunet_name_or_id(tmp_path, monkeypatch):
    from globalmask.dataset import resolve_dataset_path
    from globalmask.errors import GlobalmaskError

    raw = tmp_path / "raw"
    make_tiny_dataset(raw / "Dataset501_Tiny", n=3, shape=(8, 8, 6))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(GlobalmaskError, match=r"set \$nnUNet_raw"):
        resolve_dataset_path("501")
    monkeypatch.setenv("nnUNet_raw", str(raw))
    assert resolve_dataset_path("501") == raw / "Dataset501_Tiny"
    assert resolve_dataset_path("Dataset501_Tiny") == raw / "Dataset501_Tiny"
    assert load_dataset("501").root == raw / "Dataset501_Tiny"
    assert resolve_dataset_path(tmp_path) == tmp_path  # an existing folder as given
    assert resolve_dataset_path("data/ds") == Path("data/ds")  # not a name: the reader says it is missing
    with pytest.raises(GlobalmaskError, match="no dataset with id 007"):
        resolve_dataset_path("7")
    make_tiny_dataset(raw / "Dataset501_Other", n=3, shape=(8, 8, 6))
    with pytest.raises(GlobalmaskError, match="several folders"):
        resolve_dataset_path("501")


def test_cli_commands_take_an_nnunet_id(tmp_path, monkeypatch, capsys):
    from globalmask.cli import main

    ds = make_tiny_dataset(tmp_path / "raw" / "Dataset042_Tiny", n=4, shape=(12, 12, 10))
    (ds / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_001"], "validation": ["case_002"], "test": ["case_003"]}),
        encoding="utf-8",
    )
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "nnunet", "42", "--mode", "ct", "--out", str(tmp_path / "e")]) == 0
    pred = tmp_path / "pred"
    shutil.copytree(ds / "labelsTr", pred)
    assert main(["evaluate", str(pred), "Dataset042_Tiny", "--subset", "test", "--out", str(tmp_path / "ev")]) == 0
    assert "test split: 1 case(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of dataset.py asked for


def _plain(root: Path, names=("p1", "p2", "p3", "p4"), labelled=("p1", "p2", "p3")) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in names:
        write_volume(Volume(np.zeros((4, 4, 4), np.int16), np.eye(4)), root / "images" / f"{name}.nrrd")
        if name in labelled:
            write_volume(Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4)), root / "labels" / f"{name}.nii.gz")
    return root


def test_a_plain_dataset_without_splits_json_gets_a_seeded_split_and_a_missing_label_names_labels(tmp_path):
    root = _plain(tmp_path / "ds")
    ds = load_dataset(root)
    assert ds.split_file is None and ds.load_split() is None
    assert resolve_split(ds, seed=2)[1] == "seeded split (seed 2)"
    (root / "labelsTr").mkdir()  # a stray folder of that name: the labels are still read from labels/
    save_split(Split(("p1", "p4"), ("p2",), ("p3",)), root / "splits.json", note="by hand")
    ds = load_dataset(root)
    assert ds.split_file == root / "splits.json"
    with pytest.raises(DatasetError) as err:
        resolve_split(ds)
    assert err.value.path == root / "labels" / "p4.nrrd"
    assert "has an image but no label file labels/p4.nrrd" in str(err.value)


def test_save_split_writes_what_load_split_reads_with_the_note(tmp_path):
    split = Split(("a", "b"), ("c",), ("d",))
    assert save_split(split, tmp_path / "s.json", note="seeded split (seed 1)") == tmp_path / "s.json"
    assert load_split(tmp_path / "s.json", ["a", "b", "c", "d"]) == split
    assert json.loads((tmp_path / "s.json").read_text())["note"] == "seeded split (seed 1)"


def test_what_is_not_a_dataset_is_refused_naming_the_folder_and_the_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "empty")
    assert str(err.value) == (
        f"{tmp_path / 'empty'}: not a dataset: expected dataset.json with imagesTr/ and labelsTr/ (nnU-Net v2) or "
        "images/ and labels/ subfolders"
    )
    (tmp_path / "noimages" / "images").mkdir(parents=True)
    (tmp_path / "noimages" / "images" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"images/ holds no volumes \(\.nii\.gz, \.nii, ") as err:
        load_dataset(tmp_path / "noimages")
    assert err.value.path == tmp_path / "noimages" / "images"


def test_dataset_json_refusals_name_the_file(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=2, shape=(8, 8, 6))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"1": "CT"}}))
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    assert str(err.value) == f"{root / 'dataset.json'}: 'channel_names' must map '0' to the CT channel"
    (root / "dataset.json").write_text(json.dumps({"name": "x"}))
    for read in (load_dataset, lambda r: read_labels_file(r / "dataset.json")):
        with pytest.raises(DatasetError) as err:
            read(root)
        assert str(err.value) == f"{root / 'dataset.json'}: dataset.json has no 'labels' entry"


def test_a_subset_without_any_split_is_refused_saying_how_to_give_one(tmp_path):
    root = make_tiny_dataset(tmp_path / "ds", n=2, shape=(8, 8, 6))
    with pytest.raises(DatasetError) as err:
        subset_ids(load_dataset(root), "test")
    assert err.value.path == root
    assert err.value.problem == (
        "argument --subset test: the dataset has no splits.json; give the split with --split FILE (a run folder's "
        "splits.json is the split that run was trained with)"
    )
