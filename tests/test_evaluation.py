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


# ----------------------------------------------------------------------------------------------
# evaluate_folder (issue 29: what its mutants asked for)


def _refs_and_preds(tmp_path, n=3):
    """n reference label maps (one 2x2x2 cube of label 1) and their perfect predictions."""
    import numpy as np

    from globalmask.io import Volume, write_volume

    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    for i in range(n):
        write_volume(Volume(ref, np.eye(4)), tmp_path / "labels" / f"c{i}.nii.gz")
        write_volume(Volume(ref, np.eye(4)), tmp_path / "pred" / f"c{i}.nii.gz")
    return tmp_path / "pred", tmp_path / "labels"


def test_evaluate_folder_logs_each_case_with_its_number_and_mean_dice(tmp_path, caplog):
    import logging

    from globalmask.evaluation import evaluate_folder

    pred, labels = _refs_and_preds(tmp_path)
    (pred / "c2.nii.gz").unlink()
    with caplog.at_level(logging.INFO, logger="globalmask"), pytest.warns(UserWarning, match="c2"):
        evaluate_folder(pred, labels)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluate ")]
    assert lines == [
        "evaluate 1/3 c0: mean Dice 1.000 over 1 structure(s)",
        "evaluate 2/3 c1: mean Dice 1.000 over 1 structure(s)",
        "evaluate 3/3 c2: mean Dice 0.000 over 1 structure(s) (no prediction: scored as empty)",
    ]


def test_evaluate_folder_skips_files_that_are_not_volumes(tmp_path):
    from globalmask.evaluation import evaluate_folder

    pred, labels = _refs_and_preds(tmp_path)
    for folder in (pred, labels):
        (folder / "a_notes.csv").write_text("x", encoding="utf-8")  # sorts before every case
        (folder / "c0_notes.txt").write_text("notes", encoding="utf-8")  # between two cases
        (folder / "sub").mkdir()
    per_case, _ = evaluate_folder(pred, labels)
    assert list(per_case["case"]) == ["c0", "c1", "c2"] and (per_case["dice"] == 1.0).all()


def test_evaluate_folder_refusals_name_the_folder(tmp_path):
    from globalmask.errors import DatasetError
    from globalmask.evaluation import evaluate_folder

    pred, labels = _refs_and_preds(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no reference label volumes") as err:
        evaluate_folder(pred, tmp_path / "empty")
    assert err.value.path == tmp_path / "empty"
    with pytest.raises(DatasetError) as err:
        evaluate_folder(tmp_path / "empty", labels)
    assert err.value.path == tmp_path / "empty"
    assert str(err.value).endswith(f"holds no prediction volumes; expected one per reference in {labels}: "
                                   "c0.nii.gz, c1.nii.gz, c2.nii.gz")


def test_evaluate_folder_lists_up_to_ten_missing_predictions_then_dots(tmp_path):
    from globalmask.evaluation import evaluate_folder

    pred, labels = _refs_and_preds(tmp_path, n=13)
    for i in range(1, 3):
        (pred / f"c{i}.nii.gz").unlink()
    with pytest.warns(UserWarning) as caught:
        evaluate_folder(pred, labels)
    (two,) = [str(w.message) for w in caught if "have no prediction" in str(w.message)]
    assert two.endswith("(structures missed): c1, c2")
    for i in range(3, 12):
        (pred / f"c{i}.nii.gz").unlink()
    with pytest.warns(UserWarning) as caught:
        evaluate_folder(pred, labels)
    (eleven,) = [str(w.message) for w in caught if "have no prediction" in str(w.message)]
    assert eleven.startswith("11 reference case(s)")
    assert eleven.endswith("(structures missed): c1, c10, c11, c2, c3, c4, c5, c6, c7, c8 ...")


def test_evaluate_folder_qc_title_says_when_a_prediction_is_missing(tmp_path, monkeypatch):
    from globalmask import evaluation

    pred, labels = _refs_and_preds(tmp_path, n=2)
    (pred / "c1.nii.gz").unlink()
    titles = {}

    def draw(path, labels, ref, pred, ct, title):
        titles[path.name] = title

    monkeypatch.setattr(evaluation, "draw_case", draw)
    with pytest.warns(UserWarning, match="c1"):
        evaluation.evaluate_folder(pred, labels, qc_dir=tmp_path / "qc")
    assert titles == {"c0.png": "c0: prediction against the reference",
                      "c1.png": "c1: no prediction (scored as empty) against the reference"}


def test_labels_derived_from_the_references_keep_background_at_zero(tmp_path):
    """No label JSON: the structures are the reference values; a prediction value no reference has is refused."""
    import numpy as np

    from globalmask.errors import DatasetError
    from globalmask.evaluation import evaluate_folder
    from globalmask.io import Volume, write_volume

    pred, labels = _refs_and_preds(tmp_path, n=2)  # label 1 only
    per_case, _ = evaluate_folder(pred, labels, out_dir=tmp_path / "ev")
    assert set(per_case["structure"]) == {"label_1"} and (per_case["dice"] == 1.0).all()
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert summary["labels"] == {"background": 0, "label_1": 1}
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 2
    for folder in ("labels2", "pred2"):
        write_volume(Volume(ref, np.eye(4)), tmp_path / folder / "c0.nii.gz")
    write_volume(Volume(np.where(ref > 0, 1, 0).astype(np.uint8), np.eye(4)), tmp_path / "pred2" / "c0.nii.gz")
    with pytest.raises(DatasetError, match=r"label value\(s\) \[1\] that are not declared in the label map \[0, 2\]"):
        evaluate_folder(tmp_path / "pred2", tmp_path / "labels2")
