"""Self-contained model checkpoints: everything ``predict`` needs, nothing it has to guess.

A checkpoint (``model.pt``) holds the input mode, the GBM recipe, the preprocessing (target
spacing, CT window, crop), the label names, the network configuration and patch size, the
weights, and a record of how it was trained. It contains only plain Python types and tensors, so
it loads with ``torch.load(weights_only=True)``: opening a checkpoint never runs code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .dataset import parse_labels
from .errors import CheckpointError, GlobalmaskError, WriteError
from .io import atomic_path, write_failure
from .masks import Recipe
from .model import InputMode, NetConfig, build_network
from .preprocess import PreprocessConfig
from .validate import check_keys, fail, integer, number, sequence

FORMAT = "globalmask-model"
FORMAT_VERSION = 1


@dataclass
class ModelSpec:
    """What a trained model is, apart from its weights.

    Attributes
    ----------
    mode : InputMode
        The network's input channels.
    recipe : Recipe
        The GBM recipe.
    preprocess : PreprocessConfig
        Target spacing (mm), CT window (HU) and crop.
    labels : dict[str, int]
        ``{name: value}`` of every output class, background included.
    net : NetConfig
        The network's architecture.
    patch_size : tuple of int
        The sliding-window size (voxels; two sides for a 2D network).
    sw_overlap : float
        Sliding-window overlap, in [0, 1).
    info : dict[str, Any]
        How the model was trained (dataset, cases, seed, best step, ...).
    """

    mode: InputMode
    recipe: Recipe
    preprocess: PreprocessConfig
    labels: dict[str, int]
    net: NetConfig
    patch_size: tuple[int, ...]
    sw_overlap: float = 0.25
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A checkpoint is input too: every field is checked before a network is built from it."""
        self.mode = InputMode.parse(self.mode)

        self.labels = parse_labels(self.labels, Path("checkpoint labels"))
        dims = self.net.spatial_dims
        self.patch_size = sequence(integer(1, 1024), dims, "patch sizes in voxels")(self.patch_size, "patch_size")
        d = self.net.divisor
        if any(p % d for p in self.patch_size):
            fail(
                "patch_size",
                list(self.patch_size),
                f"multiples of {d} for a U-Net with {len(self.net.channels)} levels",
            )
        self.sw_overlap = number(self.sw_overlap, "sw_overlap", lo=0.0, hi=1.0, hi_open=True)
        if not isinstance(self.info, dict):
            fail("info", self.info, "a mapping")

    @property
    def n_classes(self) -> int:
        """The number of output classes: the largest label value plus one.

        Returns
        -------
        int
            The network's output channels.
        """
        return max(self.labels.values()) + 1

    def build(self) -> torch.nn.Module:
        """A fresh (untrained) network with this model's architecture.

        Returns
        -------
        torch.nn.Module
            The network.
        """
        return build_network(self.mode.channels, self.n_classes, self.net)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain Python types (how checkpoints store it).

        Returns
        -------
        dict[str, Any]
            One entry per field.
        """
        return {
            "mode": self.mode.value,  # a plain str: checkpoints load with weights_only=True
            "recipe": self.recipe.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "labels": dict(self.labels),
            "net": self.net.to_dict(),
            "patch_size": list(self.patch_size),
            "sw_overlap": self.sw_overlap,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """The spec from :meth:`to_dict`'s dict, every field checked; unknown keys are refused.

        Parameters
        ----------
        d : dict[str, Any]
            The stored spec.

        Returns
        -------
        ModelSpec
            The checked spec.
        """
        check_keys(d, ["mode", "recipe", "preprocess", "labels", "net", "patch_size", "sw_overlap", "info"], "spec")
        return cls(
            mode=InputMode.parse(d["mode"]),
            recipe=Recipe.parse(d["recipe"]),
            preprocess=PreprocessConfig.from_dict(d["preprocess"]),
            labels={str(k): int(v) for k, v in d["labels"].items()},
            net=NetConfig.from_dict(d["net"]),
            patch_size=tuple(int(p) for p in d["patch_size"]),
            sw_overlap=float(d.get("sw_overlap", 0.25)),
            info=dict(d.get("info", {})),
        )


def save_model(path: str | Path, spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write a checkpoint (atomically): the spec, the weights (on the CPU) and the format's version.

    Parameters
    ----------
    path : str or Path
        The checkpoint file.
    spec : ModelSpec
        What the model is.
    state_dict : dict[str, torch.Tensor]
        The network's weights.

    Returns
    -------
    Path
        ``path``.
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "globalmask_version": __version__,
        "spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    return save_atomic(payload, path)


def save_atomic(payload: Any, path: str | Path) -> Path:
    """torch.save via a temporary file: a failure (full disk, ...) leaves the previous file intact.

    torch's zip writer reports a full disk as RuntimeError rather than OSError; both become a
    :class:`~globalmask.errors.WriteError` saying what happened and that nothing was replaced.

    Parameters
    ----------
    payload : Any
        What to save.
    path : str or Path
        The destination file.

    Returns
    -------
    Path
        ``path``.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as exc:
        raise WriteError(write_failure(path, exc), path) from exc
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint file's envelope (format and version).

    Parameters
    ----------
    path : str or Path
        The checkpoint file.

    Returns
    -------
    dict[str, Any]
        The checkpoint's content (``spec``, ``state_dict``, versions).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = (
            type(exc).__name__
            if "pickl" in type(exc).__name__.lower()
            else f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
        )
        raise CheckpointError(f"cannot read checkpoint, corrupt or not a globalmask model? ({detail})", path) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a globalmask model checkpoint (no 'format: globalmask-model' entry)", path)
    if (
        _newer(str(payload.get("globalmask_version", "0")), __version__)
        or payload.get("format_version") != FORMAT_VERSION
    ):
        raise CheckpointError(
            f"checkpoint format version {payload.get('format_version')} written by globalmask "
            f"{payload.get('globalmask_version')}; this is globalmask {__version__} (format {FORMAT_VERSION}): "
            "retrain or use that version",
            path,
        )
    return payload


def _newer(a: str, b: str) -> bool:
    """True when version ``a`` is a newer major.minor than ``b`` (its format may be unknown here)."""

    def key(v: str) -> tuple[int, ...]:
        parts = []
        for p in v.split(".")[:2]:
            digits = "".join(ch for ch in p if ch.isdigit())
            parts.append(int(digits) if digits else 0)
        return tuple(parts)

    return key(a) > key(b)


def load_model(path: str | Path, expect_mode: InputMode | None = None) -> tuple[ModelSpec, torch.nn.Module]:
    """Rebuild the network from a checkpoint, with its weights loaded (eval mode, CPU).

    Parameters
    ----------
    path : str or Path
        The checkpoint file.
    expect_mode : InputMode or None
        Refuse a checkpoint trained with another input mode.

    Returns
    -------
    spec : ModelSpec
        What the model is.
    net : torch.nn.Module
        The network with its weights, in eval mode on the CPU.
    """
    payload = read_checkpoint(path)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except GlobalmaskError as exc:
        raise CheckpointError(f"checkpoint specification is invalid: {exc}", path) from exc
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint specification is incomplete or invalid ({type(exc).__name__}: {exc})", path
        ) from exc
    if expect_mode is not None and spec.mode != expect_mode:
        raise CheckpointError(
            f"checkpoint was trained with input mode {spec.mode.value!r}, not {str(expect_mode)!r}", path
        )
    net = spec.build()
    try:
        net.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise CheckpointError(
            f"weights do not fit the network described in the checkpoint ({str(exc)[:200]})", path
        ) from exc
    net.eval()
    return spec, net
