"""Input modes and the network (MONAI's UNet), described by plain data so checkpoints can rebuild it.

An *input mode* says which channels the network sees. The paper's three are ``ct`` (baseline),
``gbm`` (shape and position only) and ``ct+gbm`` (two channels); ``ct+coords`` (CT plus three
normalised voxel-coordinate channels) is a position-prior control: it tells apart "the GBM helps
because it carries anatomy" from "it helps because it carries position".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from .errors import GlobalmaskError
from .validate import check_fields, check_keys, choice, integer, real, sequence

# mode -> (number of channels, builder from (ct, gbm) arrays of one case/patch)
ChannelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_MODES: dict[str, tuple[int, ChannelFn]] = {}


def register_mode(name: str, channels: int) -> Callable[[ChannelFn], ChannelFn]:
    def wrap(fn: ChannelFn) -> ChannelFn:
        _MODES[name] = (channels, fn)
        return fn

    return wrap


@register_mode("ct", 1)
def _ct(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    return ct[None].astype(np.float32, copy=False)


@register_mode("gbm", 1)
def _gbm(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    return gbm[None].astype(np.float32)


@register_mode("ct+gbm", 2)
def _ct_gbm(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    return np.stack([ct.astype(np.float32, copy=False), gbm.astype(np.float32)])


@register_mode("ct+coords", 4)
def _ct_coords(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in ct.shape], indexing="ij")
    return np.stack([ct.astype(np.float32, copy=False), *grids])


MODES: tuple[str, ...] = ("ct", "gbm", "ct+gbm")


def mode_channels(mode: str) -> int:
    check_mode(mode)
    return _MODES[mode][0]


def check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise GlobalmaskError(f"unknown input mode {mode!r}; choose one of {', '.join(_MODES)}")
    return mode


def binary_channels(mode: str) -> list[int]:
    """Indices of channels that are binary masks (nearest-neighbour only, no intensity change)."""
    return {"gbm": [0], "ct+gbm": [1]}.get(mode, [])


def intensity_channels(mode: str) -> list[int]:
    """Indices of CT channels (the only ones that get intensity augmentation)."""
    return {"ct": [0], "ct+gbm": [0], "ct+coords": [0]}.get(mode, [])


def make_input(mode: str, ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    """Stack the channels of ``mode`` from a case's normalised CT and GBM arrays: (C, *shape)."""
    check_mode(mode)
    return _MODES[mode][1](ct, gbm)


@dataclass(frozen=True)
class NetConfig:
    """MONAI UNet settings. ``spatial_dims`` 3 (volumes) or 2 (axial slices)."""

    spatial_dims: int = 3
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        rules = {
            "spatial_dims": choice((2, 3)),
            "channels": sequence(integer(1, 4096), (2, 10), "channel counts (one per U-Net level)"),
            "strides": sequence(integer(1, 4), (1, 9), "strides"),
            "num_res_units": integer(0, 16),
            "dropout": real(0.0, 1.0, hi_open=True),
        }
        for key, value in check_fields(self, rules, "net.").items():
            object.__setattr__(self, key, value)
        if len(self.strides) != len(self.channels) - 1:
            raise GlobalmaskError(f"net.strides: got {len(self.strides)} stride(s) for {len(self.channels)} channel levels; a UNet needs one stride fewer than channel levels")

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (the product of the strides)."""
        return int(np.prod(self.strides))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        check_keys(d, [f.name for f in fields(cls)], "net settings")
        return cls(**d)


def build_network(in_channels: int, out_channels: int, config: NetConfig) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=config.spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )
