"""augment.py: spatial augmentation keeps masks binary and lengths in mm; intensity changes touch CT channels only."""

from __future__ import annotations

import numpy as np
import torch

from globalmask.augment import AugmentConfig, apply_intensity, apply_spatial, random_spatial_matrices


def test_spatial_augmentation_keeps_masks_binary_and_identity_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 2, 16, 16, 12)
    x[:, 0] = torch.randn(3, 16, 16, 12)
    x[:, 1, 4:10, 5:9, 3:8] = 1.0
    y = (x[:, 1:2] > 0).to(torch.uint8) * 3
    mats = random_spatial_matrices(3, (32.0, 32.0, 36.0), AugmentConfig(p_spatial=1.0), g)
    xa, ya = apply_spatial(x, y, mats, binary_channels=[1], background=torch.tensor([-1.0, 0.0]))
    assert set(torch.unique(xa[:, 1]).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(ya).tolist()) <= {0, 3}
    # the label follows the GBM exactly (same grid, same nearest-neighbour sampling)
    assert torch.equal((ya > 0), (xa[:, 1:2] > 0))
    eye = torch.eye(3).expand(3, 3, 3)
    xi, yi = apply_spatial(x, y, eye, binary_channels=[1])
    assert torch.allclose(xi, x, atol=1e-5) and torch.equal(yi, y)


def test_rotation_in_millimetres_preserves_physical_lengths():
    """A 90-degree turn of a rod in a non-cubic patch keeps its length in mm (not in patch units)."""
    from globalmask.augment import _rotation

    ext = torch.tensor([40.0, 20.0, 40.0])  # 20 x 10 x 20 voxels of 2 mm
    ang = torch.tensor([[0.0, 0.0, np.pi / 2]])
    m = torch.diag(1.0 / ext) @ _rotation(ang) @ torch.diag(ext)
    x = torch.zeros(1, 1, 20, 10, 20)
    x[0, 0, 6:14, 4:6, 9:11] = 1.0  # 8 voxels = 16 mm along axis 0
    xa, _ = apply_spatial(x, None, m, binary_channels=[0])
    idx = torch.nonzero(xa[0, 0])
    extent = (idx.max(0).values - idx.min(0).values + 1).tolist()
    assert extent == [2, 8, 2]  # now 16 mm along axis 1 (a rotation in patch units would give 4)


def test_intensity_augmentation_only_touches_ct_channels():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(4, 2, 8, 8, 8)
    x[:, 1, 2:5, 2:5, 2:5] = 1.0
    before = x[:, 1].clone()
    out = apply_intensity(x, [0], AugmentConfig(p_intensity=1.0, p_noise=1.0), g)
    assert torch.equal(out[:, 1], before)
    assert not torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))


# ----------------------------------------------------------------------------------------------
# issue 29: what the mutants of augment.py asked for


def test_rotations_stay_within_plus_minus_rotate_deg_and_scales_within_their_range():
    g = torch.Generator().manual_seed(0)
    turns = random_spatial_matrices(200, (30.0, 30.0, 30.0), AugmentConfig(p_spatial=1.0, scale=(1.0, 1.0)), g,
                                    in_plane_only=True)
    deg = torch.rad2deg(torch.atan2(turns[:, 1, 0], turns[:, 0, 0]))
    assert float(deg.abs().max()) <= 15.0 + 1e-4 and float(deg.min()) < -12.0 and float(deg.max()) > 12.0
    zooms = random_spatial_matrices(200, (30.0, 20.0, 40.0), AugmentConfig(p_spatial=1.0, rotate_deg=0.0), g)
    s = zooms[:, 0, 0]
    assert torch.allclose(zooms, s[:, None, None] * torch.eye(3), atol=1e-6)  # no rotation: a uniform scale
    assert float(s.min()) >= 0.85 and float(s.max()) <= 1.15 and float(s.max() - s.min()) > 0.25


def test_several_continuous_channels_each_get_their_own_background():
    """ct+coords: four continuous channels; what comes from outside the patch is each channel's background."""
    x = torch.ones(1, 4, 8, 8, 8) * torch.tensor([0.5, 0.1, 0.2, 0.3]).view(1, 4, 1, 1, 1)
    zoom_out = (2.0 * torch.eye(3))[None]  # the output samples twice the patch: its border comes from outside
    out, _ = apply_spatial(x, None, zoom_out, binary_channels=[], background=torch.tensor([-1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(out[0, :, 0, 0, 0].numpy(), [-1.0, 0.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[0, :, 4, 4, 4].numpy(), [0.5, 0.1, 0.2, 0.3], atol=1e-6)


def test_spatial_augmentation_follows_the_image_to_its_device():
    """The matrices are drawn on the CPU; the image may be on a GPU (PyTorch's meta device stands in for one)."""
    x = torch.zeros(2, 2, 8, 8, 8, device="meta")
    y = torch.zeros(2, 1, 8, 8, 8, dtype=torch.uint8, device="meta")
    out, lab = apply_spatial(x, y, torch.eye(3).expand(2, 3, 3), [1], torch.tensor([-1.0, 0.0]))
    assert out.device.type == "meta" and out.shape == x.shape and lab.dtype == torch.uint8


def test_intensity_noise_is_added_and_drawn_from_the_given_generator_only():
    cfg = AugmentConfig(p_intensity=1.0, shift=0.0, scale_intensity=(1.0, 1.0), p_noise=0.5, noise_std=0.05)
    results = []
    for global_seed in (1, 2):  # the global torch RNG must not matter: runs are seeded by their own generator
        torch.manual_seed(global_seed)
        x = torch.full((16, 1, 6, 6, 6), 0.5)
        results.append(apply_intensity(x, [0], cfg, torch.Generator().manual_seed(5)))
    assert torch.equal(results[0], results[1])
    delta = results[0][:, 0] - 0.5
    noisy = delta.flatten(1).std(dim=1) > 0
    assert 0 < int(noisy.sum()) < 16  # about half the samples get noise
    assert float(delta.abs().max()) < 0.3 and float(delta[noisy].std()) < 0.05  # added to the image, not replacing it
    assert torch.all(delta[~noisy] == 0)
