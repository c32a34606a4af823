"""Input modes and the network (MONAI's UNet), described by plain data so checkpoints can rebuild it.

An *input mode* says which channels the network sees. The paper's three are ``ct`` (baseline),
``gbm`` (shape and position only) and ``ct+gbm`` (two channels); ``ct+coords`` (CT plus three
normalised voxel-coordinate channels) is a position-prior control: it tells apart "the GBM helps
because it carries anatomy" from "it helps because it carries position".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
import torch

from .errors import GlobalmaskError
from .validate import check_fields, check_keys, choice, integer, real, sequence


class InputMode(StrEnum):
    """Which channels the network sees. A str enum: it compares equal to, prints as, and is stored
    in JSON/YAML/checkpoints as its value (``"ct+gbm"``), so files written before it stay readable.

    Parse user text once at the edge (CLI, config, checkpoint) with :meth:`parse`; everything past
    the edge takes an ``InputMode``.
    """

    CT = "ct"
    GBM = "gbm"
    CT_GBM = "ct+gbm"
    CT_COORDS = "ct+coords"

    @classmethod
    def parse(cls, value: object) -> InputMode:
        """The mode named ``value``, or a one-line error listing the modes.

        Parameters
        ----------
        value : object
            A mode's value, e.g. ``"ct+gbm"``.

        Returns
        -------
        InputMode
            The mode.
        """
        if isinstance(value, str) and value in cls._value2member_map_:
            return cls(value)
        raise GlobalmaskError(f"unknown input mode {value!r}; choose one of {', '.join(m.value for m in cls)}")

    @property
    def channels(self) -> int:
        """The number of input channels the mode stacks.

        Returns
        -------
        int
            1 for ``ct`` and ``gbm``, 2 for ``ct+gbm``, 4 for ``ct+coords``.
        """
        return _CHANNELS[self][0]

    @property
    def binary_channels(self) -> list[int]:
        """Indices of channels that are binary masks (nearest-neighbour only, no intensity change).

        Returns
        -------
        list of int
            Channel indices, empty when the mode has no GBM.
        """
        return {InputMode.GBM: [0], InputMode.CT_GBM: [1]}.get(self, [])

    @property
    def intensity_channels(self) -> list[int]:
        """Indices of CT channels (the only ones that get intensity augmentation).

        Returns
        -------
        list of int
            Channel indices, empty for ``gbm``.
        """
        return {InputMode.CT: [0], InputMode.CT_GBM: [0], InputMode.CT_COORDS: [0]}.get(self, [])


def _ct(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    return ct[None].astype(np.float32, copy=False)


def _gbm(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    return gbm[None].astype(np.float32)


def _ct_gbm(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    return np.stack([ct.astype(np.float32, copy=False), gbm.astype(np.float32)])


def _ct_coords(ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in ct.shape], indexing="ij")
    return np.stack([ct.astype(np.float32, copy=False), *grids])


# mode -> (number of channels, builder from the (ct, gbm) arrays of one case or patch)
ChannelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_CHANNELS: dict[InputMode, tuple[int, ChannelFn]] = {
    InputMode.CT: (1, _ct),
    InputMode.GBM: (1, _gbm),
    InputMode.CT_GBM: (2, _ct_gbm),
    InputMode.CT_COORDS: (4, _ct_coords),
}

#: The paper's three modes (``ct+coords`` is a control, run on request).
MODES: tuple[InputMode, ...] = (InputMode.CT, InputMode.GBM, InputMode.CT_GBM)


def check_mode(mode: object) -> InputMode:
    """Alias of :meth:`InputMode.parse` for callers that validate a name.

    Parameters
    ----------
    mode : object
        A mode's value.

    Returns
    -------
    InputMode
        The mode.
    """
    return InputMode.parse(mode)


def make_input(mode: InputMode, ct: np.ndarray, gbm: np.ndarray) -> np.ndarray:
    """Stack the channels of ``mode`` from a case's normalised CT and GBM arrays: (C, *shape).

    Parameters
    ----------
    mode : InputMode
        The channels to stack.
    ct : numpy.ndarray
        The normalised CT ([-1, 1]) on the network grid or a patch of it.
    gbm : numpy.ndarray
        The GBM (0/1), same shape.

    Returns
    -------
    numpy.ndarray
        float32, shape (C, *ct.shape).
    """
    return _CHANNELS[mode][1](ct, gbm)


@dataclass(frozen=True)
class NetConfig:
    """MONAI UNet settings. ``spatial_dims`` 3 (volumes) or 2 (axial slices).

    Attributes
    ----------
    spatial_dims : int
        3 (volumes) or 2 (axial slices).
    channels : tuple of int
        Feature channels per U-Net level.
    strides : tuple of int
        Down-sampling stride between levels (one fewer than ``channels``).
    num_res_units : int
        Residual units per block.
    norm : str
        MONAI normalisation name.
    dropout : float
        Dropout probability, in [0, 1).
    """

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
            raise GlobalmaskError(
                f"net.strides: got {len(self.strides)} stride(s) for {len(self.channels)} channel levels; a UNet "
                "needs one stride fewer than channel levels"
            )

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this (the product of the strides).

        Returns
        -------
        int
            The product of the strides.
        """
        return int(np.prod(self.strides))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (how checkpoints store them).

        Returns
        -------
        dict[str, Any]
            One entry per field.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        """The settings from :meth:`to_dict`'s dict; unknown keys are refused.

        Parameters
        ----------
        d : dict[str, Any]
            The stored settings.

        Returns
        -------
        NetConfig
            The checked settings.
        """
        check_keys(d, [f.name for f in fields(cls)], "net settings")
        return cls(**d)


def build_network(in_channels: int, out_channels: int, config: NetConfig) -> torch.nn.Module:
    """A MONAI UNet with ``config``'s architecture (MONAI is imported here, on first use: it is slow to import).

    Parameters
    ----------
    in_channels : int
        Input channels (:attr:`InputMode.channels`).
    out_channels : int
        Output classes, background included.
    config : NetConfig
        The architecture.

    Returns
    -------
    torch.nn.Module
        The untrained network.
    """
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
