"""masks.py: GBM recipes on crafted volumes with known answers, recipe text round trips, make_gbm, real CT."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from globalmask.cli import main
from globalmask.errors import GlobalmaskError
from globalmask.io import Volume, read_volume
from globalmask.masks import (
    Recipe,
    available_recipes,
    body_mask,
    bone_mask,
    fill_holes_slicewise,
    largest_component,
    make_gbm,
    otsu_mask,
    percentile_mask,
    threshold_mask,
)

from .conftest import CHEST, OPENKBP, needs_chest, needs_openkbp, oblique_affine


def crafted_ct(shape=(40, 40, 30)) -> np.ndarray:
    """Air, a body cylinder (40 HU) with an internal air cavity (an 'airway' open at the top),
    a bone rod (800 HU), a fat rim (-100 HU), and a separate couch slab (0 HU) below the body."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    ct = np.full(shape, -1000, np.int16)
    r2 = (x - 20) ** 2 + (y - 18) ** 2
    ct[r2 < 12**2] = -100
    ct[r2 < 10**2] = 40
    ct[((x - 20) ** 2 + (y - 12) ** 2 < 2**2)] = 800  # bone rod, full length
    airway = ((x - 20) ** 2 + (y - 23) ** 2 < 2**2) & (z > 10)
    ct[airway] = -990  # open to the outside at the top slice
    ct[:, 34:36, :] = 0  # couch, separated from the body by air
    return ct


# one voxel per value, in a 3 x 3 x 2 block: levels sit exactly on a voxel value
LADDER = np.array(
    [-1000, -501, -500, -499, -301, -300, -299, -151, -150, -149, 0, 249, 250, 251, 300, 800, 1000, 3000], np.int16
).reshape(3, 3, 2)


def test_threshold_counts_exactly():
    ct = crafted_ct()
    m = threshold_mask(ct, level=-300)
    # per axial slice: the body disk dx^2 + dy^2 < 144 has sum over dx = -11..11 of
    # (2 floor(sqrt(143 - dx^2)) + 1) = 23 + 2 (23+23+23+23+21+21+19+17+15+13+9) = 437 voxels, the
    # couch 2 x 40 = 80; the airway (9 voxels in each of slices 11..29) is a hole
    assert m[:, :, 0].sum() == 437 + 80
    assert m.sum() == (437 + 80) * 30 - 9 * 19
    assert not m[20, 23, 20]  # airway stays a hole: a shape cue
    assert m[:, 34, :].all()  # a plain threshold keeps the couch


@pytest.mark.parametrize(
    "recipe, kept",
    [
        ("threshold", [-299, -151, -150, -149, 0, 249, 250, 251, 300, 800, 1000, 3000]),  # level -300: strictly above
        ("threshold:-150", [-149, 0, 249, 250, 251, 300, 800, 1000, 3000]),
        ("bone", [251, 300, 800, 1000, 3000]),  # level 250: 250 itself is out
        ("bone:level=300", [800, 1000, 3000]),
    ],
)
def test_a_voxel_exactly_at_the_level_is_outside_the_mask(recipe, kept):
    m = Recipe.parse(recipe)(LADDER)
    assert sorted(LADDER[m].tolist()) == kept


def test_body_level_is_strict_too():
    """The body recipe at -500 HU: -500 is out, -499 is in (one connected block, no holes)."""
    ct = np.full((5, 5, 5), -1000, np.int16)
    ct[1:4, 1:4, 1:4] = -499
    ct[2, 2, 2] = -500  # an enclosed voxel at the level: a hole, then filled
    ct[0, 0, 0] = -500  # an isolated corner voxel at the level: not part of the body
    m = body_mask(ct, level=-500)
    assert m.sum() == 27 and m[2, 2, 2] and not m[0, 0, 0]
    assert body_mask(ct, level=-499).sum() == 0  # nothing is strictly above -499


def test_body_keeps_largest_component_and_fills_airway():
    ct = crafted_ct()
    m = body_mask(ct, level=-500)
    assert not m[:, 34:36, :].any()  # couch removed
    assert m[20, 23, 20]  # airway filled slice by slice even though it opens at the top
    r2 = (np.arange(40)[:, None] - 20) ** 2 + (np.arange(40)[None, :] - 18) ** 2
    expected_slice = r2 < 12**2
    np.testing.assert_array_equal(m[:, :, 15], expected_slice)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", [0.52, 0.47])  # sparse blobs (many components) / dense (many holes)
def test_fast_component_and_fill_match_scipy(seed, level):
    """The SimpleITK components and one-pass slice fill give exactly what the plain scipy
    formulation gives: label + argmax of sizes, 3D fill, then binary_fill_holes per slice."""
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random((30, 26, 22)), 1.5) > level
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    expected_lcc = labels == np.argmax(sizes)
    np.testing.assert_array_equal(largest_component(mask), expected_lcc)
    filled_somewhere = False
    for axis in range(3):
        moved = np.moveaxis(ndimage.binary_fill_holes(expected_lcc), axis, 0)
        expected = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axis)
        np.testing.assert_array_equal(fill_holes_slicewise(expected_lcc, axis), expected)
        filled_somewhere |= bool((expected != expected_lcc).any())
    assert filled_somewhere if level < 0.5 else n > 1  # the case exercises what it is for
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()


def test_body_fills_along_superior_axis_from_affine():
    """With the superior-inferior axis first (e.g. an SIL-ordered array), holes are filled per axial slice."""
    ct = np.moveaxis(crafted_ct(), 2, 0)
    affine = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    m = body_mask(ct, affine, level=-500)
    assert m[20, 20, 23]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_body_fills_per_slice_across_the_axis_the_affine_calls_superior(axis):
    """An airway open at the top is closed only by filling slices across the S-I axis.

    The crafted CT has S-I along its last array axis; stored with that axis moved to ``axis``
    (and the affine saying so), the airway voxel must be filled whatever the axis is.
    """
    ct = np.moveaxis(crafted_ct(), 2, axis)
    airway = [20, 23]
    airway.insert(axis, 20)
    assert body_mask(ct, superior_along(axis), level=-500)[tuple(airway)]
    # filling across another axis leaves the open airway open
    assert not body_mask(ct, superior_along((axis + 1) % 3), level=-500)[tuple(airway)]


def superior_along(axis: int) -> np.ndarray:
    """A permutation affine whose array axis ``axis`` points superior (world z)."""
    world = [0, 1]
    world.insert(axis, 2)
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, world]
    return affine


def test_bone_and_otsu():
    ct = crafted_ct()
    assert bone_mask(ct, level=250).sum() == 9 * 30  # the rod: 9 voxels (dx, dy in -1..1) in each of 30 slices
    m = otsu_mask(ct)
    # Otsu lands between air and tissue on a CT: body and couch in, air out
    assert m[20, 18, 5] and not m[2, 2, 2]
    assert otsu_mask(np.zeros((4, 4, 4))).sum() == 0


def test_recipe_parsing_and_round_trip():
    r = Recipe.parse("threshold:-200")
    assert r.params == {"level": -200.0}
    assert Recipe.parse(r.spec) == r
    assert Recipe.parse("body:level=-400").params["level"] == -400.0
    assert Recipe.parse(None).spec == "bone:level=250"  # the default, the OpenKBP ablation winner
    assert Recipe.parse(r.to_dict()) == r
    assert set(available_recipes()) >= {"threshold", "otsu", "body", "bone", "percentile"}
    with pytest.raises(GlobalmaskError, match="unknown GBM recipe"):
        Recipe.parse("magic")
    with pytest.raises(GlobalmaskError, match="no parameter"):
        Recipe("otsu", {"level": 3})
    with pytest.raises(GlobalmaskError, match="must be a number"):
        Recipe.parse("bone:high")


def percentile_ct(air_voxels: int = 900) -> np.ndarray:
    """Air (-1000 HU) around a 'body' of 100 voxels valued 1..100 HU, one of each."""
    values = np.concatenate([np.full(air_voxels, -1000.0), np.arange(1.0, 101.0)])
    return np.random.default_rng(0).permutation(values).reshape(-1, 10, 10)


def test_percentile_keeps_the_top_of_the_body_by_rank():
    ct = percentile_ct()
    # Otsu splits air from body; the 90th percentile of 1..100 is 90.1, so 91..100 are kept
    assert sorted(ct[percentile_mask(ct, q=90)].tolist()) == list(range(91, 101))
    assert sorted(ct[Recipe.parse("percentile:75")(ct)].tolist()) == list(range(76, 101))  # 75.25: 76..100
    assert Recipe.parse("percentile").spec == "percentile:q=90"
    assert not Recipe.parse("percentile").uses_hounsfield()  # needs no HU calibration
    assert percentile_mask(np.full((4, 4, 4), 7.0)).sum() == 0


def test_percentile_survives_monotone_hu_changes_and_more_air_while_fixed_levels_do_not():
    ct = percentile_ct()
    ref = percentile_mask(ct)
    warped = np.where(ct > 50, 50 + (ct - 50) * 3.0, ct) * 1.1 - 80.0  # steeper above 50, then recalibrated
    np.testing.assert_array_equal(percentile_mask(warped), ref)
    assert not np.array_equal(threshold_mask(warped, level=60), threshold_mask(ct, level=60))
    more_air = percentile_ct(air_voxels=1900)
    assert sorted(more_air[percentile_mask(more_air)].tolist()) == list(range(91, 101))  # air does not count


def test_otsu_follows_a_recalibrated_scan():
    ct = crafted_ct().astype(np.float32)
    # Otsu is per scan: a linear change moves it along
    np.testing.assert_array_equal(otsu_mask(ct * 0.9 - 80.0), otsu_mask(ct))


@pytest.mark.parametrize("spec", ["threshold:", "bone: ", "percentile:", "body:level=", "threshold:-300,"])
def test_an_empty_recipe_parameter_is_refused_in_one_line(spec):
    with pytest.raises(GlobalmaskError) as err:
        Recipe.parse(spec)
    msg = str(err.value)
    assert "\n" not in msg and (repr(spec.strip()) in msg or repr(spec) in msg or "got ''" in msg)


def test_cli_refuses_an_empty_recipe_level_before_reading_anything(tmp_path, capsys):
    assert main(["masks", str(tmp_path / "nowhere"), "--recipe", "threshold:", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "threshold:" in err and "empty" in err
    assert not (tmp_path / "out").exists()


def test_recipe_text_keeps_fractional_levels_and_names_the_choices():
    r = Recipe.parse("threshold:-200.5")
    assert r.spec == "threshold:level=-200.5" and Recipe.parse(r.spec) == r
    assert Recipe.parse("otsu").spec == "otsu:bins=256"  # integral values print without ".0"
    assert Recipe.parse({"name": "body"}) == Recipe("body")  # a stored recipe without parameters
    choices = "choose one of body, bone, otsu, percentile, threshold"
    with pytest.raises(GlobalmaskError, match=f"unknown GBM recipe 'magic'; {choices}"):
        Recipe("magic")
    with pytest.raises(GlobalmaskError, match=f"unknown GBM recipe 'magic'; {choices}"):
        Recipe.parse("magic:3")
    with pytest.raises(GlobalmaskError, match=r"no parameter\(s\) \['foo'\]"):
        Recipe.parse("bone:level=300,foo=1")  # items are comma-separated


def test_make_gbm_errors_name_the_file_and_the_recipe():
    from globalmask.errors import IntensityError

    nan_ct = crafted_ct().astype(np.float32)
    nan_ct[1, 2, 3] = np.nan
    with pytest.raises(IntensityError, match=r"NaN or infinite \(first at index \(1, 2, 3\)\)") as err:
        make_gbm(Volume(nan_ct, np.eye(4), "nan_ct.nii.gz"), "otsu")
    assert "nan_ct.nii.gz" in str(err.value)
    scaled = Volume(np.linspace(0, 1, 64, dtype=np.float32).reshape(4, 4, 4), np.eye(4), "scaled.nii.gz")
    with pytest.raises(IntensityError, match="recipe 'threshold:level=-300'") as err:
        make_gbm(scaled, "threshold")
    assert "scaled.nii.gz" in str(err.value)


def test_make_gbm_keeps_shape_and_affine():
    ct = Volume(crafted_ct(), oblique_affine())
    g = make_gbm(ct, "body")
    assert g.array.dtype == np.uint8 and set(np.unique(g.array)) <= {0, 1}
    assert g.shape == ct.shape
    np.testing.assert_array_equal(g.affine, ct.affine)
    # the body recipe, not the default: airway filled, couch gone, fat rim kept
    assert g.array[20, 23, 20] == 1 and g.array[:, 34:36, :].sum() == 0 and g.array[20, 7, 5] == 1
    assert make_gbm(ct, "bone").array[20, 23, 20] == 0 and make_gbm(ct, "bone").array.sum() == 9 * 30


def test_make_gbm_reads_the_superior_axis_from_the_affine():
    """S-I along the first array axis: only slices across that axis close the open airway."""
    ct = Volume(np.moveaxis(crafted_ct(), 2, 0), superior_along(0))
    assert make_gbm(ct, "body").array[20, 20, 23] == 1


def test_make_gbm_refuses_non_hounsfield_data_for_hu_recipes_only():
    from globalmask.errors import IntensityError

    scaled = Volume((crafted_ct().astype(np.float32) + 1000) / 4000, np.eye(4), "scaled.nii.gz")  # [0, 0.95]
    for recipe in ("threshold", "body", "bone:level=0.5"):
        with pytest.raises(IntensityError, match="Hounsfield"):
            make_gbm(scaled, recipe)
    g = make_gbm(scaled, "otsu")  # calibration-free: accepted, and finds the body and couch
    assert g.array[20, 18, 5] == 1 and g.array[2, 2, 2] == 0
    assert Recipe.parse("otsu").uses_hounsfield() is False and Recipe.parse("bone").uses_hounsfield() is True


@needs_openkbp
def test_gbm_recipes_on_a_real_head_and_neck_ct():
    ct = read_volume(OPENKBP / "imagesTr" / "openkbp_002_0000.nii.gz")
    lab = read_volume(OPENKBP / "labelsTr" / "openkbp_002.nii.gz").array
    body = make_gbm(ct, "body").array.astype(bool)
    thr = make_gbm(ct, "threshold").array.astype(bool)
    bone = make_gbm(ct, "bone").array.astype(bool)
    assert bone.sum() < thr.sum() <= body.sum() * 1.05
    # every contoured organ lies inside the body silhouette
    assert body[lab > 0].mean() > 0.99
    # the mandible is bone: most of it is in the bone mask
    assert bone[lab == 5].mean() > 0.5


@needs_chest
def test_body_recipe_on_a_real_lps_chest_ct():
    ct = read_volume(CHEST / "ct.nii.gz")
    heart = read_volume(CHEST / "heart.nii.gz").array > 0
    body = make_gbm(ct, "body").array.astype(bool)
    thr = make_gbm(ct, "threshold").array.astype(bool)
    assert body[heart].mean() > 0.99
    assert thr.sum() < body.sum()  # lungs are holes in the threshold mask, filled in the body mask


# ----------------------------------------------------------------------------------------------
# the `globalmask masks` command


def test_cli_masks_writes_one_mask_per_case(phantom_ds, tmp_path, capsys):
    assert main(["masks", str(phantom_ds.root), "--recipe", "body", "--out", str(tmp_path / "m")]) == 0
    # (hidden: globalmask's output marker)
    files = sorted(p for p in (tmp_path / "m").iterdir() if not p.name.startswith("."))
    assert len(files) == len(phantom_ds)
    ct = read_volume(phantom_ds.cases[files[0].name[: -len(".nii.gz")]].image)
    m = read_volume(files[0])
    assert m.shape == ct.shape and np.allclose(m.affine, ct.affine) and m.array.dtype == np.uint8
    assert set(np.unique(m.array)) == {0, 1}
    # a solid body silhouette: every organ inside it, the field-of-view corners (air) outside
    lab = read_volume(phantom_ds.cases[files[0].name[: -len(".nii.gz")]].label).array
    assert m.array[lab > 0].all()
    assert m.array[0, 0, 0] == 0 and m.array[-1, -1, -1] == 0
