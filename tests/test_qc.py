"""qc.py: one PNG per case, a row of axial/coronal/sagittal panels per structure, outlines and a legend."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from globalmask.cli import main
from globalmask.io import Volume, read_volume, write_volume
from globalmask.qc import draw_case

from .conftest import make_tiny_dataset

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_draw_case_has_a_row_per_structure_found(tmp_path):
    ref = Volume(np.zeros((20, 16, 12), np.uint8), np.diag([1.0, 1.5, 3.0, 1.0]))
    ref.array[4:10, 4:10, 3:8] = 1
    pred = ref.with_array(np.zeros_like(ref.array))
    pred.array[5:11, 4:10, 3:8] = 1
    pred.array[14:17, 10:13, 5:7] = 2  # a false positive of the second structure
    labels = {"background": 0, "a": 1, "b": 2, "c": 3}  # c is in neither: no row
    one = draw_case(tmp_path / "one.png", {"background": 0, "a": 1}, ref, pred)
    three = draw_case(tmp_path / "two.png", labels, ref, pred, ct=ref.with_array(np.full(ref.shape, 40, np.int16)))
    (w1, h1), (w2, h2) = _png_size(one), _png_size(three)
    assert w1 == w2 and h2 > 1.8 * h1  # two rows against one
    empty = draw_case(tmp_path / "none.png", labels, ref.with_array(np.zeros_like(ref.array)), None)
    assert _png_size(empty)[0] == w1
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.fixture
def ds_and_preds(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=4, shape=(16, 16, 12))
    (ds / "splits.json").write_text(
        json.dumps({"train": ["case_000", "case_001"], "validation": [], "test": ["case_002", "case_003"]}),
        encoding="utf-8",
    )
    pred = tmp_path / "pred"
    shutil.copytree(ds / "labelsTr", pred)
    lab = read_volume(pred / "case_002.nii.gz")
    write_volume(lab.with_array(np.roll(lab.array, 2, axis=0)), pred / "case_002.nii.gz")
    return ds, pred


def test_evaluate_qc_writes_one_picture_per_scored_case(ds_and_preds, tmp_path, capsys):
    ds, pred = ds_and_preds
    assert main(["evaluate", str(pred), str(ds / "labelsTr"), "--subset", "test", "--out", str(tmp_path / "ev"),
                 "--qc", str(tmp_path / "qc")]) == 0
    assert sorted(p.name for p in (tmp_path / "qc").glob("*.png")) == ["case_002.png", "case_003.png"]
    assert "2 PNG(s)" in capsys.readouterr().out
    # a second run replaces its own pictures; a user's file of that name is never replaced
    assert main(["evaluate", str(pred), str(ds / "labelsTr"), "--subset", "test", "--out", str(tmp_path / "ev"),
                 "--qc", str(tmp_path / "qc")]) == 0
    (tmp_path / "qc2").mkdir()
    (tmp_path / "qc2" / "case_003.png").write_bytes(b"mine")
    assert main(["evaluate", str(pred), str(ds / "labelsTr"), "--subset", "test", "--out", str(tmp_path / "ev"),
                 "--qc", str(tmp_path / "qc2"), "--overwrite"]) == 2
    assert (tmp_path / "qc2" / "case_003.png").read_bytes() == b"mine"
    # never into a dataset
    assert (
        main(["evaluate", str(pred), str(ds / "labelsTr"), "--out", str(tmp_path / "ev"), "--qc", str(ds / "qc")]) == 2
    )


def test_predict_qc_outlines_the_prediction_and_the_reference(ds_and_preds, tmp_path):
    from globalmask.checkpoint import ModelSpec, save_model
    from globalmask.masks import Recipe
    from globalmask.model import NetConfig
    from globalmask.preprocess import PreprocessConfig

    ds, _ = ds_and_preds
    spec = ModelSpec(
        "ct",
        Recipe.parse(None),
        PreprocessConfig(spacing=(2.0, 2.0, 2.5)),
        {"background": 0, "left": 1, "right": 2},
        NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        (16, 16, 16),
    )
    model = save_model(tmp_path / "run" / "model.pt", spec, spec.build().state_dict())
    assert main(["predict", str(model), str(ds), "--subset", "test", "--device", "cpu", "--out", str(tmp_path / "p"),
                 "--qc", str(tmp_path / "qc")]) == 0
    assert sorted(p.name for p in (tmp_path / "qc").glob("*.png")) == ["case_002.png", "case_003.png"]
    assert main(["predict", str(model), str(ds / "imagesTr" / "case_000_0000.nii.gz"), "--device", "cpu",
                 "--out", str(tmp_path / "p1"), "--qc", str(tmp_path / "qc1")]) == 0
    assert [p.name for p in (tmp_path / "qc1").glob("*.png")] == ["case_000.png"]
