"""phantom/case.py: one phantom case: label maps, dtypes and RAS affine, determinism, pinned output, label sizes,
argument checks."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest

from globalmask import phantom
from globalmask.errors import GlobalmaskError
from globalmask.phantom import (
    HEADNECK_LABELS,
    THORAX_CHAMBER_LABELS,
    THORAX_LABELS,
    make_phantom_case,
    make_phantom_dataset,
)

from .conftest import SMALL, VARIANTS, _case, _labels, _volume_ml

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
    # computed from the code before thorax-varied was added (commit d958ecc's phantom): the
    # thorax kind, and so the committed thorax study's cohort, did not change with it
    ("thorax", 0, 0, (24, 28, 20), False): (
        "ef80213bf7473c17fdce019d17f1f3cc32ff3b93d163bf4899e71a5ba17572f8",
        "0e63c22d247cd15d9372f0b06bc752a1d38ecd5b13a018a98f5e9f955fd69a9b",
        "69c164871a86e30e2dd004411ba1c6313e70f57d5266851b4c02b24621433789",
    ),
    ("thorax", 1, 0, (24, 28, 20), True): (
        "8f81700ddc39a91ee49033b08069766b66222cf2ec57d4fc3ff55e559340e2c5",
        "4c5b5fdd7389d85f800ac11aa09e2e77c31763d35c95371358e501c59b07025a",
        "2b1f455660ce8dac7e22e4b3ed7fc459958d465d12ac372d6d43d75ec0454331",
    ),
    ("thorax", 5, 11, (32, 32, 32), False): (
        "2e9675e79a5e05e3a18c2da18d13849eff50d817e412e0c6f9d75304eea207eb",
        "c7b197f286c3586908a881279cd9ad33d91c293fd1fd20945a4aadd21f3708d1",
        "3cf683e050ad24ac0a6f3ac7d3e6c9bbd9ddd96b0ac9e060c372ba76bd1fe326",
    ),
    # thorax-varied: the thorax case's label and affine (same hashes as above), its own image;
    # it also pins the shift.VARIATION_SUITE voltage and kernel levels it uses
    ("thorax-varied", 2, 3, (20, 24, 28), False): (
        "db6d2fff1f65ff08e376275a2df28ded4d5dec83d7b08c9e19afe129218b6b5a",
        "d495dc3bd72b677d3aff2b9869d777bd89e00139360d644d649a2205e7e321d1",
        "ab1fbefc785c73b66f2fde1202f8b759874ff96c5ac3fc41b144e23e829d237d",
    ),
    ("thorax-varied", 0, 0, (24, 28, 20), True): (
        "01afba0620ee979ee001329eee7a439d4b0a96305c4bc9bbe9a7bc116821a318",
        "72386d4a18e524f906b65d551f85a0f00bc31132f1980dc10287216a703a0d35",
        "69c164871a86e30e2dd004411ba1c6313e70f57d5266851b4c02b24621433789",
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


# ----------------------------------------------------------------------------------------------
# intensities: GBM-friendly tissue classes, unreliable absolute HU across scanners


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


def test_the_label_maps_by_kind_and_a_bad_shape_or_index_named():
    from globalmask.phantom import case as phantom_case

    assert phantom_case.phantom_labels("headneck") == dict(phantom_case.HEADNECK_LABELS)
    assert phantom_case.phantom_labels("thorax") == dict(phantom_case.THORAX_LABELS)
    assert phantom_case.phantom_labels("thorax", chambers=True) == dict(phantom_case.THORAX_CHAMBER_LABELS)
    with pytest.raises(GlobalmaskError) as e:
        make_phantom_case("headneck", 0, 0, ("a", 64, 64))  # type: ignore[arg-type]
    assert str(e.value) == "phantom shape must be three integers, got ('a', 64, 64)"
    with pytest.raises(GlobalmaskError) as e:
        make_phantom_case("headneck", -1, 0)
    assert str(e.value) == "index must be >= 0, got -1"
