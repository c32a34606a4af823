"""The fast inversion (restore_labels) gives the very label map of the plain full inversion.

``reference_restore`` is the straightforward algorithm restore_labels replaced: every class channel
resampled with one trilinear ``interpolate`` over the whole cropped grid, a running argmax (first
class wins ties), pasted into background, axes put back. The fast version resamples one axis at a
time and only inside the box where a structure can win; the label maps must be equal bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from globalmask import preprocess
from globalmask.io import Volume
from globalmask.phantom import make_phantom_case
from globalmask.preprocess import (
    PreprocessConfig,
    _linear_axis,
    _touching,
    from_canonical,
    prepare_case,
    resize,
    restore_labels,
)

from .conftest import oblique_affine

ORIENTATIONS = {
    "RAS": np.diag([1.5, 2.0, 3.0, 1.0]),
    "LPS": np.diag([-1.5, -2.0, 3.0, 1.0]),
    "PLI": np.array([[0, -2.0, 0, 0], [-1.5, 0, 0, 0], [0, 0, -3.0, 0], [0, 0, 0, 1]]),
    "oblique": oblique_affine(),
}


def reference_restore(probabilities, geometry) -> np.ndarray:
    probs = torch.as_tensor(probabilities)
    crop_shape = tuple(b - a for a, b in zip(geometry.crop_start, geometry.crop_stop))
    best = resize(probs[0], crop_shape, "linear")
    arg = torch.zeros(crop_shape, dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        p = resize(probs[c], crop_shape, "linear")
        better = p > best
        best = torch.where(better, p, best)
        arg[better] = c
    canon = np.zeros(geometry.canonical_shape, dtype=np.uint8)
    canon[geometry.crop_slices] = arg.numpy()
    return from_canonical(canon, geometry.original_affine, order="F")


def _geometry(affine, spacing, shape=(30, 26, 22)):
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    body = (x - 15) ** 2 / 100 + (y - 13) ** 2 / 64 < 1
    ct = Volume(np.where(body, 40, -1000).astype(np.int16), affine)
    return prepare_case(ct, "threshold", PreprocessConfig(spacing=spacing)).geometry


def _blobs(grid, k, rng, strength=6.0):
    """Softmax of smooth logits: background nearly everywhere, a few structures in blobs."""
    logits = torch.zeros((k, *grid))
    logits[0] = 2.0
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij"))
    for c in range(1, k):
        centre = torch.as_tensor(rng.uniform(0, 1, 3) * np.array(grid), dtype=torch.float32)
        radius = float(rng.uniform(1.0, 3.0))
        d2 = ((idx - centre.view(3, 1, 1, 1)) ** 2).sum(0)
        logits[c] = strength * torch.exp(-d2 / (2 * radius**2))
    return F.softmax(logits, dim=0)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("spacing", [(4.0, 3.0, 5.0), (1.0, 1.3, 2.2)])  # coarser and finer than the input
@pytest.mark.parametrize("by_axis", [2.0, 0.0])  # always one axis at a time; never (the default picks one)
def test_fast_restore_equals_full_inversion(name, spacing, by_axis, monkeypatch):
    monkeypatch.setattr(preprocess, "_BY_AXIS_BELOW", by_axis)
    geometry = _geometry(ORIENTATIONS[name], spacing)
    rng = np.random.default_rng(0)
    grid = geometry.grid_shape
    cases = {
        "noise": F.softmax(torch.as_tensor(rng.normal(0, 2, (4, *grid)), dtype=torch.float32), dim=0),
        "blobs": _blobs(grid, 5, rng),
        "one voxel": F.softmax(torch.zeros((3, *grid)).index_put_((torch.tensor([2]), *[torch.tensor([n // 2]) for n in grid]), torch.tensor(5.0)), dim=0),
        "nothing": _blobs(grid, 3, rng, strength=1.0),  # background wins everywhere
        "ties": F.softmax(torch.as_tensor(rng.integers(0, 2, (3, *grid)), dtype=torch.float32), dim=0),
        "float64": F.softmax(torch.as_tensor(rng.normal(0, 1, (3, *grid))), dim=0),
    }
    for what, probs in cases.items():
        want = reference_restore(probs, geometry)
        got = restore_labels(probs, geometry)
        assert got.shape == geometry.original_shape and got.dtype == np.uint8 and got.flags["F_CONTIGUOUS"], what
        np.testing.assert_array_equal(got, want, err_msg=what)
        assert restore_labels(probs.numpy(), geometry, max_bytes=1).tobytes() == want.tobytes(), what  # one class at a time
    assert not reference_restore(cases["nothing"], geometry).any()  # the cases test what they claim
    assert 0 < np.count_nonzero(reference_restore(cases["blobs"], geometry)) < 0.5 * np.prod(geometry.original_shape)


def test_fast_restore_on_a_phantom_case():
    ct, lab = make_phantom_case("headneck", 0, seed=1, shape=(48, 48, 40))
    ct = Volume(ct.array[::-1].copy(), ct.affine @ np.array([[-1, 0, 0, 47], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))  # LAS
    lab = Volume(lab.array[::-1].copy(), ct.affine)
    pc = prepare_case(ct, "threshold", PreprocessConfig(spacing=(5.0, 5.0, 6.0)), lab)
    k = int(lab.array.max()) + 1
    logits = 4.0 * torch.as_tensor(np.stack([(pc.label == c) for c in range(k)]), dtype=torch.float32)
    logits += torch.as_tensor(np.random.default_rng(1).normal(0, 1, logits.shape), dtype=torch.float32)
    probs = F.softmax(logits, dim=0)
    want = reference_restore(probs, pc.geometry)
    np.testing.assert_array_equal(restore_labels(probs, pc.geometry), want)
    assert set(np.unique(want)) == set(range(k))


def test_one_axis_at_a_time_is_torch_trilinear():
    """The property the fast inversion rests on, checked directly (up- and down-sampling)."""
    x = F.softmax(torch.randn(3, 9, 14, 11, generator=torch.Generator().manual_seed(0)), dim=0)
    for size in [(20, 5, 11), (4, 31, 17), (9, 14, 12)]:
        want = F.interpolate(x[None], size=size, mode="trilinear", align_corners=False)[0]
        got = x
        for ax in (2, 1, 0):
            got = _linear_axis(got, 1 + ax, size[ax])
        assert torch.equal(got, want)


def test_touching_range():
    # 4 -> 8: output k samples input 0.5 k - 0.25 (clamped at 0) and its right neighbour
    assert _touching(0, 0, 4, 8) == (0, 3)  # k = 0, 1, 2 sample 0, 0.25, 0.75
    assert _touching(3, 3, 4, 8) == (5, 8)  # k = 5, 6, 7 sample 2.25, 2.75, 3.25
    assert _touching(2, 2, 5, 5) == (2, 3)  # same size: the identity
    # 8 -> 2: output 0 samples 1.5 (inputs 1, 2), output 1 samples 5.5 (inputs 5, 6)
    assert _touching(1, 2, 8, 2) == (0, 1)
    assert _touching(2, 5, 8, 2) == (0, 2)
    assert _touching(3, 4, 8, 2) == (0, 0)  # seen by no output voxel


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_write_volume_gives_nibabels_file_content(tmp_path, suffix, monkeypatch):
    """The in-memory NIfTI writer stores exactly what nibabel's own save stores (header and voxels)."""
    import gzip

    import nibabel as nib

    from globalmask import io

    rng = np.random.default_rng(0)
    for array in (np.asfortranarray(rng.integers(0, 4, (9, 8, 7)).astype(np.uint8)), rng.normal(0, 100, (5, 6, 7)).astype(np.int16)):
        vol = Volume(array, oblique_affine())
        fast = io.write_volume(vol, tmp_path / f"fast{suffix}")
        monkeypatch.setattr(io, "IN_MEMORY_WRITE_BYTES", -1)  # nibabel's streaming save
        slow = io.write_volume(vol, tmp_path / f"slow{suffix}")
        monkeypatch.undo()
        raw = (lambda p: gzip.decompress(p.read_bytes())) if suffix == ".nii.gz" else (lambda p: p.read_bytes())
        assert raw(fast) == raw(slow)
        back = io.read_volume(fast)
        np.testing.assert_array_equal(back.array, array)
        np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
        assert nib.load(fast).header.get_xyzt_units() == ("mm", "unknown")
