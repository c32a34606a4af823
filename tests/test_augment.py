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
