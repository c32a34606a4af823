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


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of qc.py asked for


def _pixels(img, colour, tol):
    return np.argwhere(np.all(np.abs(img - np.asarray(colour, dtype=np.float32)) < tol, axis=-1))


def test_pictures_are_radiological_with_outlines_in_their_colours_and_letters_on_their_panel(tmp_path):
    """Axial panel: the patient's right on the left, anterior up, for the CT and the outlines alike."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from globalmask.qc import PREDICTION_COLOUR, REFERENCE_COLOUR

    ct = np.full((20, 20, 20), -1000, np.int16)
    ct[10:, :10, :] = 40  # on a RAS grid: the patient's right (high x) and posterior (low y) in soft-tissue grey
    vol = Volume(ct, np.eye(4))
    ref = vol.with_array(np.zeros((20, 20, 20), np.uint8))
    ref.array[12:16, 12:16, 8:12] = 1  # right, anterior
    pred = ref.with_array(np.zeros_like(ref.array))
    pred.array[4:8, 4:8, 8:12] = 1  # left, posterior
    img = imread(draw_case(tmp_path / "q.png", {"a": 1}, ref, pred, ct=vol))[..., :3]
    axial = img[60:, : img.shape[1] // 3]  # the first panel, below the legend
    grey, black = _pixels(axial, (0.5, 0.5, 0.5), 0.08).mean(axis=0), _pixels(axial, (0, 0, 0), 0.05).mean(axis=0)
    assert grey[0] > black[0] + 50 and grey[1] < black[1] - 50  # (row, column): the grey quarter lower left
    blue, orange = _pixels(axial, to_rgb(REFERENCE_COLOUR), 0.12), _pixels(axial, to_rgb(PREDICTION_COLOUR), 0.12)
    assert len(blue) > 100 and len(orange) > 100
    assert blue.mean(axis=0)[0] < orange.mean(axis=0)[0] and blue.mean(axis=0)[1] < orange.mean(axis=0)[1]
    panel = _pixels(axial, (0, 0, 0), 0.05)[:, 1].max()  # the panel's right edge (it is black there)
    letters = _pixels(axial, (1, 1, 0), 0.25)
    assert len(letters) > 10 and letters[:, 1].max() <= panel  # R and L inside their panel, not on the next


def test_a_structure_the_prediction_missed_still_gets_its_row(tmp_path):
    ref = Volume(np.zeros((12, 12, 12), np.uint8), np.eye(4))
    ref.array[2:5, 2:5, 2:5] = 1
    ref.array[7:10, 7:10, 7:10] = 2
    pred = ref.with_array(np.where(ref.array == 1, 1, 0).astype(np.uint8))  # structure 2 missed
    one = draw_case(tmp_path / "one.png", {"a": 1}, ref, pred)
    both = draw_case(tmp_path / "both.png", {"a": 1, "b": 2}, ref, pred)
    assert _png_size(both)[1] > 1.8 * _png_size(one)[1]


def _drawn_figure(tmp_path, monkeypatch):
    """draw_case of one structure (reference and prediction) on a CT; the matplotlib Figure it saved."""
    from matplotlib.figure import Figure

    saved = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (saved.append(fig), save(fig, *a, **k))[1])
    vol = Volume(np.full((20, 20, 20), -1000, np.int16), np.eye(4))
    ref = vol.with_array(np.zeros((20, 20, 20), np.uint8))
    ref.array[12:16, 12:16, 8:12] = 1
    pred = ref.with_array(np.zeros_like(ref.array))
    pred.array[4:8, 4:8, 8:12] = 1
    draw_case(tmp_path / "q.png", {"a": 1}, ref, pred, ct=vol)
    return saved[0]


def test_the_side_letters_mirror_each_other_inside_their_panel(tmp_path, monkeypatch):
    """R | L (axial, coronal) and P | A (sagittal) sit wholly inside their panel, each as far from its own edge."""
    fig = _drawn_figure(tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    assert len(fig.axes) == 3
    for ax, sides in zip(fig.axes, ("RL", "RL", "PA")):
        panel = ax.get_window_extent(renderer)
        left, right = (t.get_window_extent(renderer) for t in ax.texts)
        assert [t.get_text() for t in ax.texts] == list(sides)
        margins = (left.x0 - panel.x0, panel.x1 - right.x1)
        assert min(margins) > 0, margins  # inside the panel
        assert margins[0] == pytest.approx(margins[1], abs=1.0), margins  # at the same distance from its edge
        assert left.x1 < panel.x0 + 0.1 * panel.width and right.x0 > panel.x1 - 0.1 * panel.width


def test_the_legend_is_a_frameless_key_above_the_panels_with_both_lines_drawn_alike(tmp_path, monkeypatch):
    """reference: solid blue, prediction: dashed orange, both 2 pt (bolder than the 1.4 pt outlines they name), in
    one row with no box around it, above the panels (over no picture)."""
    from matplotlib.colors import to_rgb

    from globalmask.qc import PREDICTION_COLOUR, REFERENCE_COLOUR

    fig = _drawn_figure(tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["reference", "prediction"]
    lines = legend.get_lines()
    assert [to_rgb(line.get_color()) for line in lines] == [to_rgb(REFERENCE_COLOUR), to_rgb(PREDICTION_COLOUR)]
    assert [line.get_linestyle() for line in lines] == ["-", "--"]
    assert [line.get_linewidth() for line in lines] == [2.0, 2.0]
    assert not legend.get_frame_on()
    box = legend.get_window_extent(renderer)
    assert box.y0 >= max(ax.get_window_extent(renderer).y1 for ax in fig.axes)
    assert box.x1 > 0.9 * fig.bbox.width  # at the top right
