"""Batched data augmentation on tensors (CPU or GPU).

*Spatial*: one random rotation + scaling per sample, applied identically to every channel and to
the label with a single ``affine_grid``; CT channels are interpolated linearly, binary (GBM)
channels and labels with nearest neighbour so they stay binary/integer. Rotations are built in
millimetres (the patch's physical extent), so anisotropic voxels are not sheared. There is no
left-right flip: left and right structures are different labels.

*Intensity*: random scale/shift, Gaussian noise and contrast (gamma-like) changes on CT channels
only; a GBM is never touched.

It is written batch-wise on tensors (rather than per-sample MONAI dictionary transforms) because
it sits in the training hot path: one ``grid_sample`` per batch costs a few percent of a step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings, stored in every checkpoint.

    Intensities are in normalised units: 0.1 = 100 HU with the default window.

    Attributes
    ----------
    p_spatial : float
        Probability of a rotation + scaling per sample.
    rotate_deg : float
        Largest rotation about each axis (degrees).
    scale : tuple of float
        (low, high) range of the isotropic scale factor.
    p_intensity : float
        Probability of an intensity scale/shift per sample.
    shift : float
        Largest intensity shift (normalised units).
    scale_intensity : tuple of float
        (low, high) range of the intensity scale factor.
    noise_std : float
        Largest standard deviation of the Gaussian noise (normalised units).
    p_noise : float
        Probability of noise per sample.
    """
    p_spatial: float = 0.8
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    p_intensity: float = 0.8
    shift: float = 0.1  # in normalised units: 0.1 = 100 HU with the default window
    scale_intensity: tuple[float, float] = (0.9, 1.1)
    noise_std: float = 0.05
    p_noise: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict.

        Returns
        -------
        dict[str, Any]
            One entry per field.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        """The settings from :meth:`to_dict`'s dict (lists read as tuples).

        Parameters
        ----------
        d : dict[str, Any]
            The stored settings.

        Returns
        -------
        AugmentConfig
            The settings.
        """
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kwargs)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles in radians -> (B, 3, 3) rotation matrices Rz @ Ry @ Rx."""
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def random_spatial_matrices(
    batch: int,
    extent_mm: tuple[float, float, float],
    cfg: AugmentConfig,
    generator: torch.Generator,
    in_plane_only: bool = False,
) -> torch.Tensor:
    """(B, 3, 3) matrices mapping output to input normalised coordinates, in array-axis order.

    Identity for samples not selected (probability ``1 - p_spatial``). ``in_plane_only`` rotates
    about the last (superior-inferior) axis only, for axial-slice (2D) training.

    Parameters
    ----------
    batch : int
        Number of samples.
    extent_mm : tuple of float
        Physical size of the patch along each array axis (mm).
    cfg : AugmentConfig
        Probability and ranges of rotation and scaling.
    generator : torch.Generator
        The random source (CPU).
    in_plane_only : bool
        Rotate about the last axis only.

    Returns
    -------
    torch.Tensor
        Shape (B, 3, 3), float32, on the CPU.
    """
    apply = torch.rand(batch, generator=generator) < cfg.p_spatial
    angles = (torch.rand(batch, 3, generator=generator) * 2 - 1) * math.radians(cfg.rotate_deg)
    if in_plane_only:
        angles[:, :2] = 0.0
    lo, hi = cfg.scale
    scales = lo + (hi - lo) * torch.rand(batch, 1, generator=generator)
    ext = torch.tensor(extent_mm, dtype=torch.float32)
    # normalised coords -> mm, rotate and scale in mm, back to normalised coords
    m = torch.diag(1.0 / ext) @ _rotation(angles) @ torch.diag(ext) * scales[:, :, None]
    eye = torch.eye(3).expand(batch, 3, 3)
    return torch.where(apply[:, None, None], m, eye)


def apply_spatial(
    image: torch.Tensor,
    label: torch.Tensor | None,
    matrices: torch.Tensor,
    binary_channels: list[int],
    background: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample image (B, C, X, Y, Z) and label (B, 1, X, Y, Z) with per-sample matrices.

    ``background`` (C,) is the value outside the field of view per channel (air for CT).

    Parameters
    ----------
    image : torch.Tensor
        Shape (B, C, X, Y, Z).
    label : torch.Tensor or None
        Shape (B, 1, X, Y, Z), integer labels.
    matrices : torch.Tensor
        Shape (B, 3, 3), from :func:`random_spatial_matrices`.
    binary_channels : list of int
        Image channels resampled with nearest neighbour.
    background : torch.Tensor or None
        Shape (C,): the value outside the field of view; None for zeros.

    Returns
    -------
    image : torch.Tensor
        The resampled image, same shape.
    label : torch.Tensor or None
        The resampled label, same dtype, or None.
    """
    b, c = image.shape[:2]
    # affine_grid's coordinates are (W, H, D) = reversed array axes
    rev = torch.flip(torch.flip(matrices, dims=[1]), dims=[2]).to(image.device, image.dtype)
    theta = torch.cat([rev, torch.zeros(b, 3, 1, device=image.device, dtype=image.dtype)], dim=2)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    bg = torch.zeros(c, device=image.device, dtype=image.dtype) if background is None else background.to(image)
    cont = [i for i in range(c) if i not in binary_channels]
    out = torch.empty_like(image)
    if cont:
        x = image[:, cont] - bg[cont].view(1, -1, 1, 1, 1)
        out[:, cont] = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg[
            cont
        ].view(1, -1, 1, 1, 1)
    # binary channels and the label share one nearest-neighbour pass (one gather per voxel)
    nearest = [image[:, binary_channels]] if binary_channels else []
    if label is not None:
        nearest.append(label.to(image.dtype))
    new_label = None
    if nearest:
        moved = F.grid_sample(
            torch.cat(nearest, 1) if len(nearest) > 1 else nearest[0],
            grid,
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )
        if binary_channels:
            out[:, binary_channels] = moved[:, : len(binary_channels)]
        if label is not None:
            new_label = moved[:, -1:].to(label.dtype)
    return out, new_label


def apply_intensity(
    image: torch.Tensor, channels: list[int], cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random per-sample scale/shift and noise on the given (CT) channels; in place, returned.

    Parameters
    ----------
    image : torch.Tensor
        Shape (B, C, ...), modified in place.
    channels : list of int
        The CT channels to change.
    cfg : AugmentConfig
        Probabilities and ranges.
    generator : torch.Generator
        The random source (CPU).

    Returns
    -------
    torch.Tensor
        ``image``.
    """
    if not channels:
        return image
    b = image.shape[0]
    shape = (b,) + (1,) * (image.ndim - 1)
    apply = (torch.rand(b, generator=generator) < cfg.p_intensity).float()
    lo, hi = cfg.scale_intensity
    scale = 1 + apply * (lo + (hi - lo) * torch.rand(b, generator=generator) - 1)
    shift = apply * (torch.rand(b, generator=generator) * 2 - 1) * cfg.shift
    noise_on = (
        (torch.rand(b, generator=generator) < cfg.p_noise).float() * torch.rand(b, generator=generator) * cfg.noise_std
    )
    scale, shift = (t.view(shape).to(image) for t in (scale, shift))
    out = image[:, channels] * scale + shift
    if bool((noise_on > 0).any()):  # most batches draw no noise: skip a full-size randn
        out += torch.randn(out.shape, generator=generator).to(image) * noise_on.view(shape).to(image)
    image[:, channels] = out
    return image
