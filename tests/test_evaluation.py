"""``globalmask evaluate``: the folder evaluation's command (the metrics themselves: test_metrics.py)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from globalmask.cli import main

from .conftest import make_tiny_dataset


@pytest.fixture
def ds_with_split(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(12, 12, 10))
    split = {
        "train": ["case_000", "case_001", "case_002"],
        "validation": ["case_003"],
        "test": ["case_004", "case_005"],
    }
    (ds / "splits.json").write_text(json.dumps(split), encoding="utf-8")
    pred = tmp_path / "pred"
    shutil.copytree(ds / "labelsTr", pred)  # perfect predictions for every case
    return ds, pred, split


@pytest.mark.parametrize("label_arg", ["labelsTr", "."])
def test_evaluate_subset_scores_only_that_list_of_the_split(ds_with_split, tmp_path, capsys, label_arg):
    ds, pred, split = ds_with_split
    assert main(["evaluate", str(pred), str(ds / label_arg), "--subset", "test", "--out", str(tmp_path / "ev")]) == 0
    scored = set(pd.read_csv(tmp_path / "ev" / "metrics.csv")["case"])
    assert scored == set(split["test"])
    assert "test split: 2 case(s)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 2 and summary["missing_predictions"] == []


def test_evaluate_subset_takes_a_split_file(ds_with_split, tmp_path):
    ds, pred, _ = ds_with_split
    other = tmp_path / "other_split.json"
    other.write_text(
        json.dumps({"train": ["case_004"], "validation": ["case_005"], "test": ["case_000"]}), encoding="utf-8"
    )
    assert main(["evaluate", str(pred), str(ds / "labelsTr"), "--subset", "validation", "--split", str(other),
                 "--out", str(tmp_path / "ev")]) == 0
    assert set(pd.read_csv(tmp_path / "ev" / "metrics.csv")["case"]) == {"case_005"}


@pytest.mark.parametrize("argv, expect", [
    (["--subset", "test"], "no splits.json"),  # a subset is never made up
    (["--split", "{split}"], "--subset"),  # --split alone means nothing
    (["--subset", "test", "--split", "{absent}"], "absent.json"),
])
def test_evaluate_subset_refusals_name_the_problem(tmp_path, capsys, argv, expect):
    ds = make_tiny_dataset(tmp_path / "ds", n=4, shape=(12, 12, 10))
    pred = tmp_path / "pred"
    shutil.copytree(ds / "labelsTr", pred)
    (tmp_path / "split.json").write_text(
        json.dumps({"train": ["case_000"], "validation": [], "test": ["case_001"]}), encoding="utf-8"
    )
    argv = [a.format(split=tmp_path / "split.json", absent=tmp_path / "absent.json") for a in argv]
    assert main(["evaluate", str(pred), str(ds / "labelsTr"), *argv, "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ev").exists()


def test_evaluate_warns_when_every_prediction_is_empty(ds_with_split, tmp_path):
    import numpy as np

    from globalmask.evaluation import evaluate_folder
    from globalmask.io import read_volume, write_volume

    ds, pred, _ = ds_with_split
    for f in pred.glob("*.nii.gz"):
        lab = read_volume(f)
        write_volume(lab.with_array(np.zeros_like(lab.array)), f)
    with pytest.warns(UserWarning, match="every prediction .* is empty"):
        evaluate_folder(pred, ds / "labelsTr")


def test_a_label_folder_with_its_own_dataset_json_is_a_label_folder(ds_with_split, tmp_path):
    ds, pred, _ = ds_with_split
    labels = tmp_path / "labels"
    shutil.copytree(ds / "labelsTr", labels)
    shutil.copy(ds / "dataset.json", labels / "dataset.json")
    assert main(["evaluate", str(pred), str(labels), "--out", str(tmp_path / "ev"), "--qc", str(tmp_path / "qc")]) == 0
    assert len(list((tmp_path / "qc").glob("*.png"))) == 6  # outlines alone: no CT known
