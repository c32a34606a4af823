"""nnU-Net v2 export: CT and GBM channels on one grid, the GBM binary and declared 'noNorm'."""

from __future__ import annotations

import json

import numpy as np
import pytest

from globalmask.cli import main
from globalmask.io import read_volume
from globalmask.masks import make_gbm

from .conftest import make_tiny_dataset


@pytest.fixture()
def tiny(tmp_path):
    root = make_tiny_dataset(tmp_path / "Dataset001_Tiny", n=4)
    (root / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_001"], "validation": ["case_002"], "test": ["case_003"]}),
        encoding="utf-8",
    )
    return root


def test_export_ct_gbm_writes_two_channels_labels_and_dataset_json(tiny, tmp_path):
    out = tmp_path / "Dataset002_TinyGBM"
    assert (
        main(["export", "nnunet", str(tiny), "--mode", "ct+gbm", "--recipe", "threshold:-300", "--out", str(out)]) == 0
    )
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "CT", "1": "noNorm"}
    assert meta["labels"] == {"background": 0, "left": 1, "right": 2}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["case_003_0000.nii.gz", "case_003_0001.nii.gz"]
    for cid in ("case_000", "case_001", "case_002"):
        ct = read_volume(out / "imagesTr" / f"{cid}_0000.nii.gz")
        gbm = read_volume(out / "imagesTr" / f"{cid}_0001.nii.gz")
        lab = read_volume(out / "labelsTr" / f"{cid}.nii.gz")
        src = read_volume(tiny / "imagesTr" / f"{cid}_0000.nii.gz")
        np.testing.assert_array_equal(ct.array, src.array)
        assert gbm.array.dtype == np.uint8 and set(np.unique(gbm.array)) <= {0, 1}
        np.testing.assert_array_equal(gbm.array, make_gbm(src, "threshold:-300").array)
        for v in (gbm, lab):
            assert v.shape == ct.shape and np.allclose(v.affine, ct.affine)


def test_export_refuses_a_bad_mode_and_a_non_empty_folder(tiny, tmp_path, capsys):
    assert main(["export", "nnunet", str(tiny), "--mode", "ct+coords", "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x", encoding="utf-8")
    assert main(["export", "nnunet", str(tiny), "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_nnunet_own_dataset_verification_accepts_the_export(tiny, tmp_path):
    try:
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    except ImportError:
        pytest.skip(
            "nnunetv2 not installed (pip install 'globalmask[nnunet]'): nnU-Net's verify_dataset_integrity not run"
        )
    out = tmp_path / "Dataset002_TinyGBM"
    assert main(["export", "nnunet", str(tiny), "--mode", "ct+gbm", "--out", str(out)]) == 0
    verify_dataset_integrity(str(out), num_processes=1)  # raises on any inconsistency


@pytest.mark.parametrize(
    "extra, fold0_train", [([], ["case_000", "case_001"]), (["--train-cases", "1", "--seed", "3"], None)]
)
def test_export_writes_our_split_as_fold_0_of_splits_final(tiny, tmp_path, capsys, extra, fold0_train):
    from globalmask.dataset import select_training_cases

    out = tmp_path / "Dataset002_TinyGBM"
    assert main(["export", "nnunet", str(tiny), "--mode", "ct", "--out", str(out), *extra]) == 0
    folds = json.loads((out / "splits_final.json").read_text(encoding="utf-8"))
    # as `globalmask train --train-cases 1 --seed 3` draws
    expected = fold0_train or select_training_cases(["case_000", "case_001"], 1, 3)
    assert folds == [{"train": expected, "val": ["case_002"]}]
    assert "nnUNet_preprocessed/Dataset002_TinyGBM" in capsys.readouterr().out


def test_export_without_a_split_writes_no_folds_and_refuses_train_cases(tmp_path, capsys):
    root = make_tiny_dataset(tmp_path / "Dataset003_NoSplit", n=3, shape=(12, 12, 10))
    assert main(["export", "nnunet", str(root), "--mode", "ct", "--out", str(tmp_path / "e")]) == 0
    assert not (tmp_path / "e" / "splits_final.json").exists()
    assert (
        main(["export", "nnunet", str(root), "--mode", "ct", "--train-cases", "1", "--out", str(tmp_path / "f")]) == 2
    )
    assert "no splits.json" in capsys.readouterr().err and not (tmp_path / "f").exists()


def test_export_of_a_dataset_with_unlabelled_cases_trains_only_on_labelled_ones(tmp_path):
    """Issue 29: an unlabelled case (an image without a label map) goes to imagesTs with no label,
    beside the split's test cases (which keep theirs in labelsTs); imagesTr holds exactly the
    labelled non-test cases, each with its label, and numTraining counts them."""
    root = make_tiny_dataset(tmp_path / "Dataset003_Partial", n=5, shape=(12, 12, 8))
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    (root / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_001"], "validation": ["case_003"], "test": ["case_004"]}),
        encoding="utf-8",
    )
    out = tmp_path / "Dataset004_PartialGBM"
    assert main(["export", "nnunet", str(root), "--mode", "ct+gbm", "--out", str(out)]) == 0
    files = {d: sorted(p.name for p in (out / d).iterdir()) for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    train = ["case_000", "case_001", "case_003"]
    assert files["imagesTr"] == [f"{c}_{k:04d}.nii.gz" for c in train for k in (0, 1)]
    assert files["labelsTr"] == [f"{c}.nii.gz" for c in train]
    assert files["imagesTs"] == [f"{c}_{k:04d}.nii.gz" for c in ("case_002", "case_004") for k in (0, 1)]
    assert files["labelsTs"] == ["case_004.nii.gz"]
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["numTraining"] == 3
    np.testing.assert_array_equal(read_volume(out / "imagesTs" / "case_002_0000.nii.gz").array,
                                  read_volume(root / "imagesTr" / "case_002_0000.nii.gz").array)


def test_export_names_the_non_empty_folder_and_shows_no_bar_when_asked_not_to(tiny, tmp_path, capsys):
    from globalmask.errors import OutputError
    from globalmask.export import export_nnunet

    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x", encoding="utf-8")
    with pytest.raises(OutputError, match="not empty") as err:
        export_nnunet(tiny, full, mode="ct", progress=False)
    assert str(full) in str(err.value)
    capsys.readouterr()
    export_nnunet(tiny, tmp_path / "quiet", mode="ct", progress=False)
    assert capsys.readouterr().err == ""  # no progress bar
