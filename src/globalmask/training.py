"""Training: seeded, resumable, validated on the validation split, best checkpoint kept.

A run folder holds::

    RUN/config.json     the resolved settings (mode, recipe, spacing, cases, seeds, ...)
    RUN/splits.json     the split used (a copy, or the seeded one made for this run)
    RUN/model.pt        best checkpoint by validation Dice (self-contained, see checkpoint.py)
    RUN/last.pt         resumable state: weights, optimiser, scheduler, RNG states, step
    RUN/history.csv     step, loss, validation Dice, elapsed seconds (rewritten at every validation)
    RUN/done.json       written last: steps run, best step, wall time, converged, stop reason

``train(..., resume=True)`` continues from ``last.pt`` and reaches the same weights as an
uninterrupted run with the same seed (every random draw comes from generators saved in it).
With a larger ``steps`` than stored it extends a run that stopped at its maximum before its plateau
(only the maximum may differ; a converged run is refused as finished). The poly and cosine
schedules are functions of the maximum, so the learning rate from the resumed step on is that of a
run with the new maximum at that step: it rises again. Every other difference is refused naming the
setting with its stored and given values, before any preprocessing.

**Plateau stopping.** ``steps`` is a maximum. Every ``val_every`` steps the model is validated;
the best-scoring weights become ``model.pt`` (validation picks the checkpoint, so a small training
set that overfits late never replaces a better earlier model). A check *improves* when it beats the
best score by more than ``min_delta``; after ``patience`` checks in a row without such an
improvement the run has reached its plateau and stops (``converged: true``). Checks count only once
the model has scored above zero: a run stuck at Dice 0 has not reached a plateau, it has not started,
and it runs on to the maximum (``converged: false``). A run that hits
``steps`` first is reported ``converged: false``: it may still have been improving.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ._version import __version__
from .augment import AugmentConfig, apply_intensity, apply_spatial, random_spatial_matrices
from .checkpoint import ModelSpec, save_atomic, save_model
from .dataset import Dataset, load_dataset, resolve_split, save_split, select_training_cases
from .errors import CheckpointError, DatasetError, OutputError
from .guard import RunLock, enclosing_dataset, remove_temp_files, stop_on_signals
from .infer import autocast, pad_values, resolve_device, sliding_window_probs
from .io import json_safe, read_affine, read_json, write_json, write_text
from .masks import Recipe
from .metrics import dice
from .model import InputMode, NetConfig, make_input
from .preprocess import SPACING, PreparedCase, PreprocessConfig, derive_spacing
from .progress import bars_enabled, note
from .training_data import PatchSampler, auto_patch_size, check_structures_present, percentile_window, prepare_cases
from .validate import Rule, boolean, check_keys, choice, fail, integer, optional, real, sequence

#: Voxels in a training patch at most (a whole cropped volume is used when it fits).
DEFAULT_MAX_PATCH_VOXELS = 96**3

#: Accepted values of every TrainConfig field that is a plain setting: TrainConfig, a study's
#: configuration and the command line all check them with :func:`check_train_settings`.
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "constant")

TRAIN_RULES: dict[str, Rule] = {
    "steps": integer(1, 10**7),
    "batch_size": integer(1, 512),
    "lr": real(0.0, 10.0, lo_open=True),
    "weight_decay": real(0.0, 10.0),
    "train_cases": optional(integer(1, 10**6)),
    "seed": integer(0, 2**32 - 1),
    "patch_size": optional(sequence(integer(1, 1024), 3, "patch sizes in voxels")),
    "max_patch_voxels": integer(1, 1024**3),
    "fg_prob": real(0.0, 1.0),
    "val_every": integer(1, 10**7),
    "patience": optional(integer(1, 10**6)),
    "min_delta": real(0.0, 1.0),
    "optimizer": choice(OPTIMIZERS),
    "schedule": choice(SCHEDULES),
    "warmup_steps": integer(0, 10**7),
    "bf16": boolean(),
    "checkpoint_every": integer(1, 10**7),
    "sw_overlap": real(0.0, 1.0, hi_open=True),
    "channels_last": boolean(),
}


def check_train_settings(settings: Mapping[str, Any], net: NetConfig, name: Callable[[str], str]) -> dict[str, Any]:
    """Check a run's training settings with the one set of rules every entry point uses.

    :data:`TRAIN_RULES` on each setting given, then what ties settings together: the patch fits
    the U-Net (:func:`check_patch_fits_net`) and the warm-up ends before the maximum steps. A
    setting given wrongly therefore fails with the same message from :class:`TrainConfig`, a study
    configuration and the command line; only its name differs, as each caller spells it.

    Parameters
    ----------
    settings : Mapping[str, Any]
        Training settings by :class:`TrainConfig` field name; keys without a rule are ignored.
    net : NetConfig
        The network the patch must fit.
    name : Callable[[str], str]
        Field name -> the name in messages (``"train.lr"``, ``"study.lr"``, ``"argument --lr"``).

    Returns
    -------
    dict[str, Any]
        The cleaned values of the settings that have a rule.
    """
    cleaned = {key: TRAIN_RULES[key](value, name(key)) for key, value in settings.items() if key in TRAIN_RULES}
    check_patch_fits_net(
        cleaned.get("patch_size"), cleaned.get("max_patch_voxels", DEFAULT_MAX_PATCH_VOXELS), net, name
    )
    warmup, steps = cleaned.get("warmup_steps", 0), cleaned.get("steps")
    if steps is not None and warmup >= steps:
        fail(name("warmup_steps"), warmup, f"fewer than the maximum steps ({steps})")
    return cleaned


def check_patch_fits_net(
    patch_size, max_patch_voxels: int, net: NetConfig, name: Callable[[str], str] = "train.".__add__
) -> None:
    """A U-Net halves the grid at every level: patch sides must be multiples of its divisor.

    Parameters
    ----------
    patch_size : sequence of int or None
        The patch size (voxels); None for an automatic one (not checked).
    max_patch_voxels : int
        The largest automatic patch, in voxels.
    net : NetConfig
        The network.
    name : callable
        Field name -> the name in messages.

    Raises
    ------
    GlobalmaskError
        When a side is not a multiple of the divisor, or the budget holds no patch.
    """
    d = net.divisor
    if patch_size is not None:
        sides = patch_size[:2] if net.spatial_dims == 2 else patch_size
        if any(p % d or p < d for p in sides):
            fail(
                name("patch_size"),
                list(patch_size),
                f"multiples of {d} (the U-Net with {len(net.channels)} levels halves the grid {len(net.strides)} "
                "times)",
            )
    if max_patch_voxels < d**net.spatial_dims:
        fail(
            name("max_patch_voxels"),
            max_patch_voxels,
            f"at least {d**net.spatial_dims} (one {d}^{net.spatial_dims} patch for this U-Net depth)",
        )


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of a run of at most ``total`` steps.

    Parameters
    ----------
    step : int
        The step, 0-based.
    total : int
        The maximum number of steps.
    schedule : str
        'poly', 'cosine' or 'constant'.
    warmup : int
        Steps of linear warm-up before the schedule.

    Returns
    -------
    float
        The factor, in (0, 1].
    """
    if step < warmup:
        return (step + 1) / warmup
    t = min(step - warmup, total - warmup) / max(1, total - warmup)
    if schedule == "poly":
        return (1 - t) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes (stored in config.json).

    Attributes
    ----------
    mode : InputMode
        The network's input channels.
    train_cases : int or None
        How many training cases to draw (seeded); None for the whole training split.
    seed : int
        Seed of the draw, the initialisation, the sampling and the augmentation.
    steps : int
        The maximum number of steps.
    batch_size : int
        Patches per step.
    lr : float
        Base learning rate.
    weight_decay : float
        Weight decay.
    optimizer : str
        'adamw' or 'sgd'.
    schedule : str
        'poly', 'cosine' or 'constant'.
    warmup_steps : int
        Steps of linear warm-up.
    bf16 : bool
        bfloat16 autocast on the CPU.
    patch_size : tuple of int or None
        Patch size (voxels); None for whole cropped volumes within ``max_patch_voxels``.
    max_patch_voxels : int
        The largest automatic patch, in voxels.
    fg_prob : float
        Fraction of patches centred on foreground.
    val_every : int
        Steps between validation checks.
    patience : int or None
        Validation checks without improvement before stopping; None: run all steps.
    min_delta : float
        The smallest rise of validation Dice that counts as an improvement.
    checkpoint_every : int
        Steps between resumable checkpoints (``last.pt``).
    net : NetConfig
        The network's architecture.
    augment : AugmentConfig
        The augmentation.
    sw_overlap : float
        Sliding-window overlap for validation and prediction, in [0, 1).
    channels_last : bool
        Use channels_last_3d memory format for 3D networks.
    """

    mode: InputMode = InputMode.CT_GBM  # a mode name (str) is parsed on construction
    train_cases: int | None = None  # None: the whole training split
    seed: int = 0
    # a maximum: runs stop at a validated plateau (OpenKBP 6 mm, 26 cases, CT only: 1400, benchmarks/convergence.md)
    steps: int = 3000
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adamw", or "sgd": SGD with Nesterov momentum 0.99 as nnU-Net trains
    schedule: str = "poly"  # learning rate over the maximum steps: "poly" (power 0.9), "cosine" or "constant"
    warmup_steps: int = 0  # linear learning-rate warm-up before the schedule
    bf16: bool = False  # bfloat16 autocast for training on CPUs with native bf16 (CUDA uses mixed precision anyway)
    patch_size: tuple[int, ...] | None = None  # None: whole (cropped) volumes if they fit max_patch_voxels
    max_patch_voxels: int = DEFAULT_MAX_PATCH_VOXELS
    fg_prob: float = 0.33
    val_every: int = 100
    # validation checks without a rise of more than min_delta before stopping; None: run all steps
    patience: int | None = 5
    min_delta: float = 0.002  # a rise of validation Dice must exceed this to count as an improvement
    checkpoint_every: int = 50
    net: NetConfig = field(default_factory=NetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sw_overlap: float = 0.25
    channels_last: bool = True  # channels_last_3d: ~25% faster 3D convolutions on CPU (benchmarks/)

    def __post_init__(self) -> None:
        self.mode = InputMode.parse(self.mode)
        settings = {key: getattr(self, key) for key in TRAIN_RULES}
        for key, value in check_train_settings(settings, self.net, "train.".__add__).items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (how config.json and checkpoints store them).

        Returns
        -------
        dict[str, Any]
            One entry per field; ``net`` and ``augment`` as dicts.
        """
        d = asdict(self)
        d["mode"] = self.mode.value
        d["net"] = self.net.to_dict()
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The settings from :meth:`to_dict`'s dict; unknown keys are refused.

        Parameters
        ----------
        d : dict[str, Any]
            The stored settings.

        Returns
        -------
        TrainConfig
            The checked settings.
        """
        check_keys(d, [f.name for f in fields(cls)], "train settings")
        d = dict(d)
        d["net"] = NetConfig.from_dict(d.get("net", {}))
        d["augment"] = AugmentConfig.from_dict(d.get("augment", {}))
        return cls(**d)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """The run's config from any mapping that names training settings, plus ``overrides``.

        The one way a run's settings are taken from elsewhere: a study's configuration
        (``StudyConfig.train_config``), the command line's arguments and the demo's settings all
        come through here, so a lever added to :class:`TrainConfig` reaches every entry point.

        Parameters
        ----------
        settings : Mapping[str, Any]
            Settings by field name; keys that are not fields of :class:`TrainConfig` are ignored
            (a study's ``modes``, the command line's ``--out``); ``net`` may be a mapping and
            ``patch_size`` a list. ``None`` is a value (``patience=None``: never stop early).
        **overrides
            Fields that win over ``settings`` (a run's mode, seed, steps), ``None`` included.

        Returns
        -------
        TrainConfig
            Parsed and checked (see :func:`check_train_settings`).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"not fields of TrainConfig: {', '.join(unknown)}")
        values = {**{k: v for k, v in settings.items() if k in names}, **overrides}
        if isinstance(values.get("net"), Mapping):
            values["net"] = NetConfig.from_dict(dict(values["net"]))
        if values.get("patch_size") is not None:
            values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`train` returns about a run.

    Attributes
    ----------
    run_dir : Path
        The run folder.
    model_path : Path
        The selected model (``model.pt``).
    best_val_dice : float
        Best validation Dice (NaN without validation).
    best_step : int
        The step of the selected model.
    steps : int
        Steps trained.
    seconds : float
        Wall time of the whole run, earlier interrupted calls included.
    train_ids : list of str
        The training cases.
    converged : bool or None
        Plateau reached before the maximum; None without a plateau rule or validation.
    stop_reason : str
        'plateau', 'max_steps' or 'interrupted'.
    max_steps : int
        The maximum number of steps.
    already_finished : bool
        True when ``resume`` found the run finished and trained nothing.
    """
    run_dir: Path
    model_path: Path
    best_val_dice: float
    best_step: int
    steps: int
    seconds: float
    train_ids: list[str]
    converged: bool | None = None  # plateau reached before the maximum; None: no plateau rule (or no validation)
    stop_reason: str = "max_steps"  # "plateau", "max_steps" or "interrupted"
    max_steps: int = 0
    already_finished: bool = False  # resume=True found the run finished: nothing was trained in this call


class Plateau:
    """Early stopping on validation Dice: ``patience`` checks without a rise of ``min_delta``.

    Pure bookkeeping (no torch), so its state is a small dict saved in ``last.pt`` and a resumed
    run stops at exactly the step an uninterrupted one would.

    Parameters
    ----------
    patience : int or None
        Checks without improvement before the plateau; None never stops.
    min_delta : float
        The smallest rise that counts as an improvement.
    """

    def __init__(self, patience: int | None, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.reference = -math.inf  # the score an improvement must beat by min_delta
        self.waited = 0  # checks since the last improvement

    def update(self, score: float) -> bool:
        """Record one validation score; True when the plateau is reached (stop now).

        Parameters
        ----------
        score : float
            The validation Dice (NaN counts as no improvement).

        Returns
        -------
        bool
            Whether the plateau is reached.
        """
        if math.isfinite(score) and score - self.min_delta > self.reference:
            self.reference, self.waited = score, 0
        elif self.reference > 0:  # a model that has found nothing yet has not plateaued: it has not started
            self.waited += 1
        return self.reached

    @property
    def reached(self) -> bool:
        """Whether ``patience`` checks have passed without improvement.

        Returns
        -------
        bool
            True when training should stop.
        """
        return self.patience is not None and self.waited >= self.patience

    def state(self) -> dict:
        """The bookkeeping to save in ``last.pt``.

        Returns
        -------
        dict
            ``{'reference': ..., 'waited': ...}``.
        """
        return {"reference": self.reference, "waited": self.waited}

    def load(self, state: dict) -> None:
        """Restore the bookkeeping from :meth:`state`.

        Parameters
        ----------
        state : dict
            The saved state.
        """
        self.reference, self.waited = float(state["reference"]), int(state["waited"])


#: ``DataConfig.window`` value for nnU-Net's CT normalisation range (see :func:`percentile_window`).
#: The default: it reached the validation plateau sooner and higher than -1000..1000 HU
#: (benchmarks/convergence.md).
PERCENTILE = "percentile"

#: A fixed CT window is two numbers in HU within this range (a CT scale runs from -1024 to a few thousand).
MAX_WINDOW_HU = 100_000.0


def check_window(value: Any, name: str) -> tuple[float, float] | str:
    """The one rule for a CT window wherever it is given: ``"percentile"`` or (low, high) in HU.

    Parameters
    ----------
    value : Any
        ``"percentile"``, or two finite numbers with low < high, each within +-100000 HU.
    name : str
        The setting's name in the message (``"study.window"``, ``"argument --window"``).

    Returns
    -------
    tuple[float, float] or str
        ``"percentile"`` or the window as two floats.
    """
    expected = f"LO HI in HU with LO < HI (each within +-{MAX_WINDOW_HU:g}), or {PERCENTILE!r}"
    if value == PERCENTILE:
        return PERCENTILE
    if isinstance(value, str):
        fail(name, value, expected)
    low, high = sequence(real(-MAX_WINDOW_HU, MAX_WINDOW_HU), 2, "window values")(value, name)
    if not low < high:
        fail(name, [low, high], expected)
    return low, high


@dataclass(frozen=True)
class DataConfig:
    """The data side of a run: GBM recipe, target grid, CT window, split and preprocessing cache.

    Run control (``device``, ``resume``, ``progress``, ...) stays keyword arguments of :func:`train`:
    it decides how a run executes, never what it computes. A recipe spec such as ``"bone:250"``
    is parsed here, once.

    Attributes
    ----------
    recipe : Recipe
        The GBM recipe (a spec is parsed).
    spacing : tuple of float or None
        Target spacing (mm), RAS array order; None for the median over the training split.
    window : tuple of float or str
        CT clip window (low, high) in HU, or 'percentile' (from the training cases).
    split_file : str or Path or None
        The split; None for the dataset's splits.json, else a seeded split saved in the run.
    split_seed : int
        Seed of the seeded split.
    cache_dir : str or Path or None
        Folder of preprocessed cases reused across runs.
    """

    recipe: Recipe = field(default_factory=Recipe)
    spacing: tuple[float, ...] | None = None  # mm, RAS array order; None: median over the training split
    # CT clip window (low, high) in HU scaled to [-1, 1], or "percentile" (from the training cases)
    window: tuple[float, ...] | str = PERCENTILE
    split_file: str | Path | None = None  # None: the dataset's splits.json, else a seeded split saved in the run
    split_seed: int = 0
    cache_dir: str | Path | None = None  # preprocessed cases reused across runs

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipe", Recipe.parse(self.recipe))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", SPACING(self.spacing, "data.spacing"))
        object.__setattr__(self, "window", check_window(self.window, "data.window"))

    def with_window(self, dataset: Dataset, train_ids: Sequence[str]) -> DataConfig:
        """This config with a ``"percentile"`` window replaced by its numbers from ``train_ids``.

        The window is derived from the training cases of the run only (never from validation or
        test cases) and saved in the checkpoint as numbers, so prediction needs no dataset.

        Parameters
        ----------
        dataset : Dataset
            The dataset.
        train_ids : sequence of str
            The run's training cases.

        Returns
        -------
        DataConfig
            ``self`` when the window is already numbers, else a copy with the numbers.
        """
        if self.window != PERCENTILE:
            return self
        return replace(self, window=percentile_window([dataset.cases[i] for i in train_ids]))



@dataclass
class PreparedData:
    """Preprocessed cases shared between runs (the study prepares once, trains many).

    Attributes
    ----------
    dataset : Dataset
        The dataset.
    recipe : Recipe
        The GBM recipe the cases were prepared with.
    preprocess : PreprocessConfig
        The resolved preprocessing settings (spacing and window as numbers).
    split : Split
        The split.
    split_source : str
        Where the split came from.
    cases : dict[str, PreparedCase]
        The prepared cases by id.
    """

    dataset: Dataset
    recipe: Recipe
    preprocess: PreprocessConfig
    split: Any
    split_source: str
    cases: dict[str, PreparedCase]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random generators.

    Parameters
    ----------
    seed : int
        The seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(
    dataset: Dataset | str | Path,
    data: DataConfig | None = None,
    case_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> PreparedData:
    """Resolve the split and target spacing, and preprocess the cases (train + validation by default).

    The target spacing defaults to the median over the *whole* training split (headers only), so
    every training subset of a study shares one grid. A ``"percentile"`` window still unresolved
    here comes from the whole training split; :func:`train` resolves it from the run's own training
    cases first. Test cases are not loaded here.

    Parameters
    ----------
    dataset : Dataset or str or Path
        The dataset or its folder.
    data : DataConfig or None
        Recipe, spacing, window, split and cache; None for the defaults.
    case_ids : sequence of str or None
        The cases to prepare; None for the training and validation lists.
    progress : bool
        Show a progress bar.

    Returns
    -------
    PreparedData
        The prepared cases with their settings and split.
    """
    data = data or DataConfig()
    progress = bars_enabled(progress)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    split, source = resolve_split(ds, data.split_file, data.split_seed)
    spacing = (
        data.spacing
        if data.spacing is not None
        else derive_spacing([read_affine(ds.cases[c].image) for c in split.train])
    )
    data = data.with_window(ds, split.train)  # a run's own training cases when train() resolved it first
    # PreprocessConfig checks the lengths
    config = PreprocessConfig(spacing=tuple(spacing), window=tuple(data.window))  # type: ignore[arg-type]
    ids = list(case_ids) if case_ids is not None else [*split.train, *split.validation]
    prepared = prepare_cases(ds.subset(ids), data.recipe, config, ds.labels, data.cache_dir, progress)
    return PreparedData(ds, data.recipe, config, split, source, {pc.id: pc for pc in prepared})


def _validate(
    net, cases: Sequence[PreparedCase], mode: InputMode, spec_patch, cfg: TrainConfig, labels, device
) -> tuple[float, dict]:
    """Mean Dice over (case, structure) pairs with a non-empty reference, on the network grid."""
    net.eval()
    pad = pad_values(mode)
    scores: dict[str, list[float]] = {n: [] for n, v in labels.items() if v != 0}
    for pc in cases:
        probs = sliding_window_probs(
            net, make_input(mode, pc.ct, pc.gbm), spec_patch, cfg.net.spatial_dims, pad, device, cfg.sw_overlap
        )
        pred = probs.argmax(0).numpy()
        for name, v in labels.items():
            if v == 0 or not (pc.label == v).any():
                continue
            scores[name].append(dice(pred == v, pc.label == v))
    net.train()
    flat = [s for v in scores.values() for s in v]
    return (float(np.mean(flat)) if flat else float("nan")), {
        k: (float(np.mean(v)) if v else float("nan")) for k, v in scores.items()
    }


def _rng_state(sampler: PatchSampler, aug_gen: torch.Generator) -> dict:
    return {
        "sampler": sampler.state(),
        "augment": aug_gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict, sampler: PatchSampler, aug_gen: torch.Generator) -> None:
    sampler.set_state(state["sampler"])
    aug_gen.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Network, optimiser, schedule, patch sampler and augmentation of one run.

    ``step()`` is one full training step (sample + augment + forward + backward + update);
    ``batch()`` and ``optimize()`` are its two halves, so benchmarks can time them separately.

    Parameters
    ----------
    spec : ModelSpec
        The model (network, mode, patch size).
    cfg : TrainConfig
        The training settings.
    cases : sequence of PreparedCase
        The labelled training cases.
    spacing : sequence of float
        The network grid's spacing (mm), for rotations in millimetres.
    device : torch.device
        Where to train.
    """

    def __init__(
        self,
        spec: ModelSpec,
        cfg: TrainConfig,
        cases: Sequence[PreparedCase],
        spacing: Sequence[float],
        device: torch.device,
    ):
        from monai.losses import DiceCELoss

        self.cfg, self.device = cfg, device
        self.patch = tuple(spec.patch_size) + ((1,) if cfg.net.spatial_dims == 2 else ())
        self.channels_last = cfg.channels_last and cfg.net.spatial_dims == 3
        self.net = spec.build().to(device)
        if self.channels_last:
            # torch's stubs lack memory_format
            self.net = self.net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        self.opt: torch.optim.Optimizer
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(
                self.net.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True, weight_decay=cfg.weight_decay
            )
        else:
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, cfg.steps, cfg.schedule, cfg.warmup_steps)
        )
        self.cpu_bf16 = cfg.bf16 and device.type == "cpu"
        # Dice over the structures only (background would dominate it), cross-entropy over all classes
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, include_background=False)
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
        pad = pad_values(cfg.mode)
        inputs = [make_input(cfg.mode, pc.ct, pc.gbm) for pc in cases]
        labels = [pc.label for pc in cases if pc.label is not None]
        if len(labels) != len(cases):
            raise DatasetError("every training case needs a label map")
        self.sampler = PatchSampler(inputs, labels, self.patch, pad, cfg.fg_prob, np.random.default_rng([cfg.seed, 1]))
        self.aug_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 7)
        self.extent_mm = (self.patch[0] * spacing[0], self.patch[1] * spacing[1], self.patch[2] * spacing[2])
        self.bin_ch, self.int_ch = cfg.mode.binary_channels, cfg.mode.intensity_channels
        self.background = torch.as_tensor(pad)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented batch, on the device: (B, C, *patch) inputs and (B, 1, *patch) labels.

        Returns
        -------
        inputs : torch.Tensor
            Shape (B, C, *patch).
        labels : torch.Tensor
            Shape (B, 1, *patch).
        """
        cfg = self.cfg
        x_np, y_np = self.sampler.sample(cfg.batch_size)
        # augment where the network runs: on a GPU the resampling is then nearly free
        x = torch.from_numpy(x_np).to(self.device, non_blocking=True)
        y = torch.from_numpy(y_np).to(self.device, non_blocking=True)
        two_d = cfg.net.spatial_dims == 2
        mats = random_spatial_matrices(x.shape[0], self.extent_mm, cfg.augment, self.aug_gen, in_plane_only=two_d)
        x, y_aug = apply_spatial(x, y, mats, self.bin_ch, self.background)
        assert y_aug is not None  # a label in, a label out
        y = y_aug
        if two_d:
            x, y = x[..., 0], y[..., 0]
        x = apply_intensity(x, self.int_ch, cfg.augment, self.aug_gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x, y

    def optimize(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Forward, loss, backward, optimiser and schedule step on a ready batch; returns the loss.

        Parameters
        ----------
        x : torch.Tensor
            The inputs, from :meth:`batch`.
        y : torch.Tensor
            The labels, from :meth:`batch`.

        Returns
        -------
        float
            The loss.
        """
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.cpu_bf16 else autocast(self.device)
        with amp:
            logits = self.net(x)
        loss = self.loss_fn(logits.float(), y.long())
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return float(loss.detach())

    def step(self) -> float:
        """One full training step on a fresh batch.

        Returns
        -------
        float
            The loss.
        """
        return self.optimize(*self.batch())

    def state_dict(self) -> dict:
        """Everything a resumed run needs: weights, optimiser, schedule and every random state.

        Returns
        -------
        dict
            The state, for ``last.pt``.
        """
        return {
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": _rng_state(self.sampler, self.aug_gen),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`.

        Parameters
        ----------
        state : dict
            The saved state.
        """
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], self.sampler, self.aug_gen)


def train(
    data: PreparedData | Dataset | str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    data_config: DataConfig | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
    keep_last: bool = True,
) -> TrainResult:
    """Train one model and write the run folder ``out`` (see the module docstring).

    ``data`` is a dataset (path or :class:`Dataset`) or an already :class:`PreparedData` (the study
    passes one to share preprocessing). ``config`` says what the network learns, ``data_config``
    what it learns from (both parsed and checked on construction); the keywords control the run.
    ``stop_after`` ends the loop after that many steps without finishing the run (tests of resuming).
    ``keep_last=False`` deletes ``last.pt`` once the run has converged (a run stopped at its maximum
    keeps it, so that it can be extended).

    Before anything is loaded: the settings are checked, ``out`` must not lie in a dataset or be a
    foreign non-empty folder, and a lock makes this process its only writer (a second ``train`` on
    the same folder is refused). SIGTERM stops the run like Ctrl-C: no temporary files stay behind
    and ``resume=True`` continues from the last checkpoint exactly.

    Parameters
    ----------
    data : PreparedData or Dataset or str or Path
        The dataset, its folder, or prepared cases.
    out : str or Path
        The run folder.
    config : TrainConfig or None
        What the network learns; None for the defaults.
    data_config : DataConfig or None
        What it learns from; must be None with :class:`PreparedData`.
    device : str
        'auto', 'cpu', 'cuda', ...
    resume : bool
        Continue the run in ``out`` from its last checkpoint.
    progress : bool
        Show progress bars.
    stop_after : int or None
        End this call after that many steps.
    log : callable or None
        Called with a line of text at every validation check and at the end.
    keep_last : bool
        Keep ``last.pt`` after the run converged.

    Returns
    -------
    TrainResult
        Where the model is and how the run ended.
    """
    cfg = config or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise DatasetError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    out = Path(out)
    root = (
        data.dataset.root if isinstance(data, PreparedData) else data.root if isinstance(data, Dataset) else Path(data)
    )
    if data_config is not None and not isinstance(data_config, DataConfig):
        raise DatasetError(f"data_config must be a DataConfig, got {type(data_config).__name__}")
    _check_run_dir_early(out, Path(root), data_config.cache_dir if data_config is not None else None)
    finished = _check_run_settings_early(out, Path(root), cfg, data, data_config, resume)
    if finished is not None:
        return finished
    resolve_device(device)
    created = not out.exists()
    try:
        with RunLock(out, "train"), stop_on_signals():
            remove_temp_files(out)
            return _train(
                data, out, cfg, data_config, device, resume, bars_enabled(progress), stop_after, log, keep_last
            )
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused or interrupted before writing anything: leave no empty folder


def _check_train_cases(cfg: TrainConfig, split) -> None:
    """Asking for more training cases than the split holds is a mistake, not a request for 'all'."""
    if cfg.train_cases is not None and cfg.train_cases > len(split.train):
        raise DatasetError(
            f"train_cases (--train-cases): got {cfg.train_cases}; the training split has only {len(split.train)} "
            "case(s)"
        )


def _check_run_dir_early(out: Path, dataset_root: Path, cache_dir) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError("run folder exists and is not a folder", out)
    inside = out.resolve() == dataset_root.resolve() or out.resolve().is_relative_to(dataset_root.resolve())
    ds = dataset_root if inside else enclosing_dataset(out)
    if ds is not None:
        raise OutputError(f"run folder must not be inside the dataset folder {ds} (datasets are read-only)", out)
    if out.is_dir() and any(not c.name.startswith(".") for c in out.iterdir()) and not (out / "config.json").is_file():
        raise OutputError("run folder exists and is not a globalmask run; choose an empty or new --out", out)
    if cache_dir is not None:
        cache = Path(cache_dir)
        ds = dataset_root if cache.resolve().is_relative_to(dataset_root.resolve()) else enclosing_dataset(cache)
        if ds is not None:
            raise OutputError(
                f"cache folder must not be inside the dataset folder {ds} (datasets are read-only)", cache
            )


def _train(
    data: PreparedData | Dataset | str | Path,
    out: Path,
    cfg: TrainConfig,
    data_config: DataConfig | None,
    device: str,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    log: Callable[[str], None] | None,
    keep_last: bool = True,
) -> TrainResult:
    """The body of :func:`train`, called holding the run folder's lock with every argument resolved."""
    t0 = time.perf_counter()
    prepared = _prepared_for_run(data, data_config, cfg, progress)
    ds, split = prepared.dataset, prepared.split
    _check_train_cases(cfg, split)
    train_ids = select_training_cases(split.train, cfg.train_cases, cfg.seed)
    val_ids = list(split.validation)
    run_config = {
        "globalmask_version": __version__,
        "dataset": str(ds.root),
        "dataset_name": ds.name,
        "split_source": prepared.split_source,
        "train_ids": train_ids,
        "validation_ids": val_ids,
        "recipe": prepared.recipe.to_dict(),
        "preprocess": prepared.preprocess.to_dict(),
        "labels": ds.labels,
        "train": cfg.to_dict(),
    }
    _claim_run_dir(out, run_config, resume, ds.root)
    if not (out / "splits.json").exists():
        save_split(split, out / "splits.json", note=f"split used by this run; source: {prepared.split_source}")
    if resume and run_is_done(out):
        return _finished_result(out, train_ids, cfg)

    train_cases = [prepared.cases[i] for i in train_ids]
    val_cases = [prepared.cases[i] for i in val_ids]
    check_structures_present(train_cases, ds.labels, f"training cases {train_ids}")
    dev = resolve_device(device)
    seed_everything(cfg.seed)
    spec = _model_spec(cfg, prepared, [*train_cases, *val_cases], train_ids)
    trainer = Trainer(spec, cfg, train_cases, prepared.preprocess.spacing, dev)
    # this call's wall time includes its preprocessing
    state = _RunState(Plateau(cfg.patience, cfg.min_delta), started=t0)
    last_path = out / "last.pt"
    if resume and last_path.exists():
        saved = load_resume_state(last_path)
        # a raised maximum is allowed
        diffs = [d for d in _differences(saved.get("config"), run_config) if d[0] != "train.steps" or d[1] > d[2]]
        if diffs:
            raise CheckpointError(
                f"last.pt was written with different settings ({_describe(diffs)}); cannot resume", last_path
            )
        trainer.load_state_dict(saved)
        state.load(saved)

    def save_state() -> None:
        save_atomic({"config": run_config, **trainer.state_dict(), **state.to_dict()}, last_path)

    loop = _Loop(trainer, spec, val_cases, ds.labels, out, state, save_state, log)
    if not loop.run(stop_after, progress, f"train {cfg.mode} n={len(train_ids)}"):
        return TrainResult(
            out, out / "model.pt", state.best, state.best_step, state.step, state.elapsed(), train_ids, None,
            "interrupted", cfg.steps,
        )
    result = _finish(out, spec, trainer, state, bool(val_cases), train_ids, log)
    if not keep_last and result.converged:
        last_path.unlink(missing_ok=True)  # a converged run is finished: its resumable state is not needed
    return result


def _prepared_for_run(
    data: PreparedData | Dataset | str | Path, data_config: DataConfig | None, cfg: TrainConfig, progress: bool
) -> PreparedData:
    """The run's cases, preprocessed: as given, or prepared with the window of the run's own training cases."""
    if isinstance(data, PreparedData):
        if data_config is not None:
            raise DatasetError(
                "the data settings (recipe, spacing, ...) come from the PreparedData; do not pass a data_config too"
            )
        return data
    data_config = data_config or DataConfig()
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    split, _ = resolve_split(ds, data_config.split_file, data_config.split_seed)
    _check_train_cases(cfg, split)
    train_ids = select_training_cases(split.train, cfg.train_cases, cfg.seed)
    return prepare_data(ds, data_config.with_window(ds, train_ids), [*train_ids, *split.validation], progress)


def _model_spec(
    cfg: TrainConfig, prepared: PreparedData, cases: Sequence[PreparedCase], train_ids: list[str]
) -> ModelSpec:
    """What the checkpoint says about the model; the patch is sized from the run's training and validation cases."""
    patch = cfg.patch_size or auto_patch_size(
        [pc.shape for pc in cases], cfg.net.divisor, cfg.max_patch_voxels, cfg.net.spatial_dims
    )
    return ModelSpec(
        mode=cfg.mode,
        recipe=prepared.recipe,
        preprocess=prepared.preprocess,
        labels=prepared.dataset.labels,
        net=cfg.net,
        patch_size=tuple(patch[:2]) if cfg.net.spatial_dims == 2 else tuple(patch),
        sw_overlap=cfg.sw_overlap,
        info={"dataset": prepared.dataset.name, "train_ids": train_ids, "seed": cfg.seed, "steps": cfg.steps},
    )


@dataclass
class _RunState:
    """Where a run stands; saved in ``last.pt`` beside the trainer's state, so a resumed run continues exactly."""

    plateau: Plateau
    started: float  # perf_counter at the start of this call
    step: int = 0
    best: float = -math.inf
    best_step: int = 0
    history: list[dict] = field(default_factory=list)
    # wall time of earlier (interrupted) calls, so history and done.json count the whole run
    elapsed_before: float = 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best": self.best,
            "best_step": self.best_step,
            "history": self.history,
            "plateau": self.plateau.state(),
            "elapsed": self.elapsed(),
        }

    def load(self, saved: dict) -> None:
        self.step, self.best, self.best_step, self.history = (
            saved["step"],
            saved["best"],
            saved["best_step"],
            saved["history"],
        )
        self.plateau.load(saved.get("plateau", {"reference": self.best, "waited": 0}))
        self.elapsed_before = float(saved.get("elapsed", 0.0))


@dataclass
class _Loop:
    """The training loop of one run: steps, validation checks, the best checkpoint and the plateau."""

    trainer: Trainer
    spec: ModelSpec
    val_cases: list[PreparedCase]
    labels: dict[str, int]
    out: Path
    state: _RunState
    save_state: Callable[[], None]
    log: Callable[[str], None] | None

    def run(self, stop_after: int | None, progress: bool, desc: str) -> bool:
        """Train to the plateau or the maximum steps; False when ``stop_after`` steps ended this call first.

        Parameters
        ----------
        stop_after : int or None
            End this call after that many steps.
        progress : bool
            Show a progress bar.
        desc : str
            The progress bar's label.

        Returns
        -------
        bool
            True when the run finished.
        """
        cfg, state = self.trainer.cfg, self.state
        self.trainer.net.train()
        bar = tqdm(
            total=cfg.steps, initial=state.step, desc=desc, unit="step", disable=not progress, dynamic_ncols=True
        )
        ema: float | None = None
        last_val = float("nan")
        steps_this_call = 0
        while state.step < cfg.steps and not state.plateau.reached:
            loss = self.trainer.step()
            state.step += 1
            steps_this_call += 1
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            record: dict[str, Any] = {"step": state.step, "loss": loss}
            if self.val_cases and (state.step % cfg.val_every == 0 or state.step == cfg.steps):
                last_val = self.validate(record)
                if self.log:
                    self.log(
                        f"step {state.step}: loss {ema:.4f} val Dice {last_val:.4f} (best {state.best:.4f} @ "
                        f"{state.best_step})"
                    )
                note(
                    f"{desc}: step {state.step}/{cfg.steps}: loss {ema:.4f}, validation Dice {last_val:.4f}, best "
                    f"{state.best:.4f} at step {state.best_step} ({state.elapsed():.0f} s)",
                    bar=progress,
                )
            record["elapsed_s"] = round(state.elapsed(), 3)
            state.history.append(record)
            bar.update(1)
            bar.set_postfix(
                loss=f"{ema:.3f}", val=f"{last_val:.3f}", best=f"{state.best:.3f}" if state.best > -math.inf else "-"
            )
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps or state.plateau.reached:
                self.save_state()
            if (
                stop_after is not None
                and steps_this_call >= stop_after
                and state.step < cfg.steps
                and not state.plateau.reached
            ):
                bar.close()
                self.save_state()
                return False
        bar.close()
        return True

    def validate(self, record: dict[str, Any]) -> float:
        """One validation check: scores into ``record``, a better model saved, the plateau told.

        Parameters
        ----------
        record : dict[str, Any]
            This step's history row, updated with the scores.

        Returns
        -------
        float
            The mean validation Dice.
        """
        trainer, state = self.trainer, self.state
        score, per = _validate(
            trainer.net, self.val_cases, trainer.cfg.mode, trainer.patch, trainer.cfg, self.labels, trainer.device
        )
        record["val_dice"] = score
        record.update({f"val_{k}": v for k, v in per.items()})
        if score > state.best:
            state.best, state.best_step = score, state.step
            self.spec.info.update({"best_step": state.step, "best_val_dice": score})
            save_model(self.out / "model.pt", self.spec, trainer.net.state_dict())
        state.plateau.update(score)
        # so a running job can be followed
        _write_history(self.out / "history.csv", [*state.history, {**record, "elapsed_s": round(state.elapsed(), 3)}])
        return score


def _finish(
    out: Path,
    spec: ModelSpec,
    trainer: Trainer,
    state: _RunState,
    validated: bool,
    train_ids: list[str],
    log: Callable[[str], None] | None,
) -> TrainResult:
    """Write the final history and ``done.json`` (and the model, when no validation chose one)."""
    cfg = trainer.cfg
    if not validated or not (out / "model.pt").exists():
        # no validation split (or no structure present in it): the final weights are the model
        state.best, state.best_step = float("nan"), state.step
        spec.info.update({"best_step": state.step, "best_val_dice": None})
        save_model(out / "model.pt", spec, trainer.net.state_dict())
    _write_history(out / "history.csv", state.history)
    seconds = state.elapsed()
    converged = state.plateau.reached if (validated and cfg.patience is not None) else None
    stop_reason = "plateau" if state.plateau.reached else "max_steps"
    if log:
        log(
            f"stopped at step {state.step} ({stop_reason}); best validation Dice {state.best:.4f} at step "
            f"{state.best_step}"
        )
    note(
        f"stopped at step {state.step} of at most {cfg.steps} ({stop_reason}); best validation Dice {state.best:.4f} "
        f"at step {state.best_step}; {seconds:.0f} s"
    )
    done = {
        "best_val_dice": state.best, "best_step": state.best_step, "steps": state.step, "max_steps": cfg.steps,
        "seconds": seconds, "converged": converged, "stop_reason": stop_reason, "patience": cfg.patience,
        "min_delta": cfg.min_delta,
    }
    if not validated:  # stated, and no NaN in the JSON (json_safe writes null): the file stays valid JSON
        done["note"] = (
            "the validation split is empty: trained to the maximum of --steps and kept the final weights (no "
            "checkpoint selection, no plateau)"
        )
    write_json(out / "done.json", json_safe(done))
    return TrainResult(
        out, out / "model.pt", state.best, state.best_step, state.step, seconds, train_ids, converged, stop_reason,
        cfg.steps,
    )


def _write_history(path: Path, history: list[dict]) -> None:
    write_text(path, pd.DataFrame(history).to_csv(index=False))


def _claim_run_dir(out: Path, run_config: dict, resume: bool, dataset_root: Path) -> None:
    """Create the run folder, or check that it is this run's own when resuming."""
    if out.resolve() == Path(dataset_root).resolve() or out.resolve().is_relative_to(Path(dataset_root).resolve()):
        raise OutputError(f"run folder must not be inside the dataset folder {dataset_root}", out)
    cfg_path = out / "config.json"
    if out.exists() and any(not c.name.startswith(".") for c in out.iterdir()):  # (the lock is hidden)
        if not cfg_path.exists():
            raise OutputError("run folder exists and is not a globalmask run; choose an empty or new --out", out)
        existing = read_json(cfg_path)
        given = _jsonable(run_config)
        diffs = _differences(existing, given)
        others = [d for d in diffs if d[0] != "train.steps"]
        if others:
            raise OutputError(
                f"run folder holds a run with different settings ({_describe(others)}); give the stored values or "
                "choose another --out",
                out,
            )
        if not resume:
            raise OutputError(
                "run folder already holds this run; pass --resume to continue it or choose another --out", out
            )
        if diffs:  # only the maximum steps differ: raise it, or refuse saying why
            _check_raised_steps(out, existing["train"]["steps"], given["train"]["steps"])
            write_json(cfg_path, given)
            (out / "done.json").unlink(missing_ok=True)  # the run is running again; _finish writes it anew
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, run_config)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (tuples as lists, paths as text)."""
    return json.loads(json.dumps(value, default=str))


_ABSENT = "(absent)"


def _differences(stored: Any, given: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(setting, stored value, given value) for every leaf where two run configurations differ."""
    if isinstance(stored, dict) and isinstance(given, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in dict.fromkeys([*stored, *given]):
            out += _differences(
                stored.get(key, _ABSENT), given.get(key, _ABSENT), f"{path}.{key}" if path else str(key)
            )
        return out
    return [] if _jsonable(stored) == _jsonable(given) else [(path, stored, given)]


def _describe(diffs: Sequence[tuple[str, Any, Any]], limit: int = 4) -> str:
    """``train.lr: stored 0.002, given 0.001; ...`` (the first ``limit`` differences, then how many more)."""
    def short(v: Any) -> str:
        text = json.dumps(_jsonable(v)) if v != _ABSENT else v
        return text if len(text) <= 60 else text[:57] + "..."

    parts = [f"{name}: stored {short(a)}, given {short(b)}" for name, a, b in diffs[:limit]]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(parts) + more


def _check_raised_steps(out: Path, stored: int, given: int) -> None:
    """``resume`` with another maximum: only a larger one, and only for a run that has not converged."""
    if given < stored:
        raise OutputError(
            f"run folder holds a run with different settings (train.steps: stored {stored}, given {given}); "
            f"the maximum steps of a run may be raised, never lowered: give --steps {stored} or more, or choose "
            "another --out",
            out,
        )
    done = read_json(out / "done.json") if (out / "done.json").is_file() else None
    if done is not None and done.get("stop_reason") == "plateau":
        raise OutputError(
            f"the run has finished: it converged at step {done.get('steps')} (validation plateau, best Dice at step "
            f"{done.get('best_step')}); a larger maximum (train.steps: stored {stored}, given {given}) would change "
            "nothing",
            out,
        )


def _finished_result(out: Path, train_ids: list[str], cfg: TrainConfig) -> TrainResult:
    done = read_json(out / "done.json")
    return TrainResult(
        out, out / "model.pt", done["best_val_dice"], done["best_step"], done["steps"], done["seconds"], train_ids,
        done.get("converged"), done.get("stop_reason", "max_steps"), done.get("max_steps", cfg.steps),
        already_finished=True,
    )


def _check_run_settings_early(
    out: Path, root: Path, cfg: TrainConfig, data: Any, data_config: DataConfig | None, resume: bool
) -> TrainResult | None:
    """The run folder's checks that need no preprocessing, before any: a run there without ``resume``,
    training settings, recipe and the data settings given that differ from the stored ones (named,
    with both values), a maximum lowered or raised past a converged run. Returns the stored result
    when ``resume`` finds the run finished with these settings (so nothing is preprocessed), else None.
    """
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        return None
    if not resume:
        raise OutputError("run folder already holds a run; pass --resume to continue it or choose another --out", out)
    stored = read_json(cfg_path)
    if not isinstance(stored, dict) or not isinstance(stored.get("train"), dict):
        return None  # an older or damaged config.json: the full check after preprocessing reports it
    given: dict[str, Any] = {"train": cfg.to_dict()}
    if isinstance(data, PreparedData):
        given["recipe"], given["preprocess"] = data.recipe.to_dict(), data.preprocess.to_dict()
    else:
        dc = data_config or DataConfig()
        given["recipe"] = dc.recipe.to_dict()
        pre: dict[str, Any] = stored["preprocess"] if isinstance(stored.get("preprocess"), dict) else {}
        given["preprocess"] = {**pre, **({"spacing": list(dc.spacing)} if dc.spacing is not None else {}),
                               **({"window": list(dc.window)} if dc.window != PERCENTILE else {})}
    diffs = _differences({k: stored.get(k, _ABSENT) for k in given}, given)
    others = [d for d in diffs if d[0] != "train.steps"]
    if others:
        raise OutputError(
            f"run folder holds a run with different settings ({_describe(others)}); give the stored values or choose "
            "another --out",
            out,
        )
    if diffs:
        _check_raised_steps(out, stored["train"]["steps"], cfg.steps)
        return None
    same_data = Path(str(stored.get("dataset", ""))).resolve() == root.resolve()
    same_split = (
        data_config is None
        or data_config.split_file is None
        or stored.get("split_source") == str(data_config.split_file)
    )
    if run_is_done(out) and same_data and same_split and isinstance(stored.get("train_ids"), list):
        return _finished_result(out, list(stored["train_ids"]), cfg)
    return None


def load_resume_state(path: Path) -> dict:
    """last.pt, or a CheckpointError that says what to do when it is corrupt or truncated.

    Parameters
    ----------
    path : Path
        The ``last.pt`` file.

    Returns
    -------
    dict
        The saved state.
    """
    keys = ("config", "model", "optimizer", "scheduler", "rng", "step", "best", "best_step", "history")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read the resume state, corrupt or truncated? ({type(exc).__name__}: {str(exc)[:120]}); "
            "delete it to restart this run from scratch",
            path,
        ) from exc
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"resume state lacks {', '.join(missing)}; delete it to restart this run from scratch", path
        )
    return state


def run_is_done(out: str | Path) -> bool:
    """True when the run folder holds a finished run (``done.json`` and ``model.pt``).

    Parameters
    ----------
    out : str or Path
        The run folder.

    Returns
    -------
    bool
        Whether the run is finished.
    """
    return (Path(out) / "done.json").exists() and (Path(out) / "model.pt").exists()
