"""dataset.py: nnU-Net and plain-folder datasets, seeded and fixed splits, their validation, nested training subsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from globalmask.dataset import load_dataset, make_split, resolve_split, select_training_cases, validate_split
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
