"""What defines a study: :class:`StudyConfig`, loadable from YAML (see benchmarks/*/study.yaml)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import GlobalmaskError
from ..masks import DEFAULT_RECIPE, Recipe
from ..model import InputMode, NetConfig, check_mode
from ..preprocess import SPACING
from ..shift import DEFAULT_SHIFTS, VARIATION_SUITE, AnyVariation, variation_from_dict
from ..training import DEFAULT_MAX_PATCH_VOXELS, TRAIN_RULES, TrainConfig, check_train_settings, check_window
from ..validate import SettingError, boolean, check_fields, choice, fail, integer, optional

ALL = "all"

#: Settings that change how a study is executed or reported, never what a run computes: they are
#: left out of the plan hash, so records made on a GPU and on a CPU belong to the same plan.
EXECUTION_ONLY = ("device", "overlays", "reference", "reference_structure")

#: Settings added after studies were committed: left out of the plan hash while at their default,
#: so the plans (and run ids) of earlier studies stay what they were. ``external_test`` is never
#: hashed as written (a path differs between machines): the plan hashes the external sets' content.
LATER_DEFAULTS: dict[str, Any] = {
    "external_test": [],
    "shifts_on_external": False,
    "shift_sizes": None,
    "recipe_rule": "validation",
}

#: How a study's settings are named in messages (``study.lr: got 20; expected ...``).
PREFIX = "study."

#: The study's settings that are settings of each run's :class:`~globalmask.training.TrainConfig`:
#: checked by its rules and handed to it by :meth:`StudyConfig.train_config` (``steps`` may be per size).
TRAIN_SETTINGS = ("batch_size", "lr", "weight_decay", "optimizer", "schedule", "warmup_steps", "bf16", "patch_size",
                  "max_patch_voxels", "val_every", "patience", "min_delta", "seed")

#: Rules of the study's own settings (the training ones are :data:`~globalmask.training.TRAIN_RULES`).
STUDY_RULES = {
    "draws": integer(1, 10**4),
    "ablation_draws": integer(1, 10**4),
    "full_draws": optional(integer(1, 10**4)),
    "overlays": integer(0, 10**4),
    "recipe_rule": choice(("validation", "robust")),
    "shifts_on_external": boolean(),
    "reference": optional(choice(("brain", "heart"))),
}

#: ``shifts: suite`` in a study file: the realistic variation suite (``shift.VARIATION_SUITE``),
#: written out level by level on loading so the plan hashes what the levels are, not a word.
SUITE = "suite"


@dataclass
class StudyConfig:
    """Everything that defines a study. Unknown YAML keys and out-of-range values are refused."""

    modes: list[str] = field(default_factory=lambda: ["ct", "gbm", "ct+gbm"])
    train_sizes: list[int | str] = field(default_factory=lambda: [1, 2, 4, 8, ALL])
    draws: int = 3
    full_draws: int | None = None  # draws at the full training size (default: draws)
    seed: int = 0
    recipe: str = DEFAULT_RECIPE  # or "auto": the ablation's validation winner drives the sweep
    spacing: list[float] | None = None
    window: list[float] | str = "percentile"  # per run, from its training cases; or [low, high] in HU
    split: str | None = None
    steps: int | dict[str, int] = 3000  # the maximum; one number, or per size: {"1": 300, ..., "all": 1000}
    val_every: int = 100
    patience: int | None = 5  # validation checks without improvement before a run stops (None: never early)
    min_delta: float = 0.002
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # or "sgd" (Nesterov 0.99, as nnU-Net)
    schedule: str = "poly"  # poly | cosine | constant, over the maximum steps
    warmup_steps: int = 0
    bf16: bool = False  # bfloat16 autocast for training on CPUs with native bf16
    patch_size: list[int] | None = None
    max_patch_voxels: int = DEFAULT_MAX_PATCH_VOXELS
    net: dict[str, Any] = field(default_factory=dict)
    # the variations (each a shift.variation_from_dict mapping), or "suite"
    shifts: list[dict[str, Any]] | str = field(default_factory=lambda: [s.to_dict() for s in DEFAULT_SHIFTS])
    # training sizes whose models are scored under the shifts (None: every size)
    shift_sizes: list[int | str] | None = None
    ablation_recipes: list[str] = field(
        default_factory=lambda: ["threshold:-300", "threshold:-500", "threshold:-100", "body", "bone", "otsu"]
    )
    ablation_draws: int = 1
    # How stage 1 ranks the recipes on the validation split: "validation" (fewest misses, lowest CoM
    # error, highest Dice: the landed rule) or "robust" (benchmarks/robustness/README.md: the highest
    # worst-case Dice over clean and every variation of `shifts`, among recipes within 0.03 of the best clean Dice)
    recipe_rule: str = "validation"
    # External test sets (nnU-Net dataset folders; a relative path is looked up beside the study's
    # dataset, i.e. in the same nnUNet_raw folder). Every run scores its best checkpoint on each, after
    # training and after every choice is made: nothing read from them decides anything.
    external_test: list[str] = field(default_factory=list)
    shifts_on_external: bool = False  # also score the scanner shifts on the external sets (costly: cases x levels)
    overlays: int = 2
    device: str = "auto"
    reference: str | None = None  # "brain" or "heart": print the paper's numbers beside ours
    reference_structure: str | None = None  # the structure compared with the paper's (e.g. brainstem)

    def __post_init__(self) -> None:
        """Check every setting; the training settings with :func:`~globalmask.training.check_train_settings`.

        Values are checked, not rewritten (except ``shifts``, written out in full): the plan hashes
        the settings as written, so committed plans keep their hashes.
        """
        name = PREFIX.__add__
        self._check_study_settings(name)
        for label, steps in self._steps_by_size().items():  # one number, or one per training size
            TRAIN_RULES["steps"](steps, name("steps") + (f".{label}" if label else ""))
        if not isinstance(self.net, dict):
            raise SettingError(f"{name('net')}: got {self.net!r}; expected a mapping of NetConfig settings")
        net = NetConfig.from_dict(self.net)
        training = {key: getattr(self, key) for key in TRAIN_SETTINGS}
        check_train_settings({**training, "steps": min(self._steps_by_size().values())}, net, name)
        if self.spacing is not None:
            SPACING(self.spacing, name("spacing"))
        check_window(self.window, name("window"))
        if self.recipe != "auto":
            Recipe.parse(self.recipe)
        for r in self.ablation_recipes:
            Recipe.parse(r)
        self._check_shifts(name)

    def _check_study_settings(self, name: Callable[[str], str]) -> None:
        """The settings of the study as a whole: modes, sizes, draws, external sets, report."""
        if not isinstance(self.modes, list) or not self.modes:
            fail(name("modes"), self.modes, "a non-empty list of " + ", ".join(m.value for m in InputMode))
        for m in self.modes:
            check_mode(m)
        if not isinstance(self.train_sizes, list) or not self.train_sizes:
            fail(name("train_sizes"), self.train_sizes, f"a non-empty list of positive integers or {ALL!r}")
        for s in self.train_sizes:
            if s != ALL and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
                fail(name("train_sizes"), s, f"positive integers or {ALL!r}")
        check_fields(self, STUDY_RULES, PREFIX)
        if not isinstance(self.external_test, list) or not all(
            isinstance(v, str) and v.strip() for v in self.external_test
        ):
            fail(name("external_test"), self.external_test, "a list of dataset folders (nnU-Net layout)")
        if len(set(self.external_test)) != len(self.external_test):
            fail(name("external_test"), self.external_test, "each dataset once")

    def _steps_by_size(self) -> dict[str, Any]:
        """``steps`` as {training size: steps} (``{"": steps}`` for one number for every size)."""
        if isinstance(self.steps, dict):
            if not self.steps:
                fail(f"{PREFIX}steps", self.steps, "an integer >= 1, or a mapping of training size to integers >= 1")
            return {str(k): v for k, v in self.steps.items()}
        return {"": self.steps}

    def _check_shifts(self, name: Callable[[str], str]) -> None:
        """The variations: each one of :mod:`globalmask.shift`, written out in full, distinct names."""
        if self.shifts == SUITE:
            self.shifts = [v.to_dict() for v in VARIATION_SUITE]
        if not isinstance(self.shifts, list) or not all(isinstance(v, dict) for v in self.shifts):
            fail(name("shifts"), self.shifts, f"a list of variations (mappings) or {SUITE!r}")
        for shift in self.shifts:
            try:
                variation_from_dict(shift)
            except GlobalmaskError as exc:
                raise SettingError(
                    f"{name('shifts')}: got {shift!r}; expected a variation of globalmask.shift ({exc})"
                ) from exc
        # canonical: every field and the name written out
        self.shifts = [variation_from_dict(v).to_dict() for v in self.shifts]
        names = [v["name"] for v in self.shifts]
        if len(set(names)) != len(names) or "none" in names:
            fail(name("shifts"), names, "distinct names other than 'none'")
        if self.shift_sizes is not None:
            if not isinstance(self.shift_sizes, list):
                fail(
                    name("shift_sizes"),
                    self.shift_sizes,
                    f"null (every size) or a list of training sizes of this study ({self.train_sizes})",
                )
            for size in self.shift_sizes:
                if size not in self.train_sizes:
                    fail(name("shift_sizes"), size, f"a training size of this study ({self.train_sizes})")

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """Read a study configuration file (unknown settings and out-of-range values refused).

        Parameters
        ----------
        path : str or Path
            The YAML file.

        Returns
        -------
        StudyConfig
            The checked configuration.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise GlobalmaskError(f"cannot read study configuration ({exc})", path) from exc
        if not isinstance(raw, dict):
            raise GlobalmaskError("study configuration must be a mapping of settings", path)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise GlobalmaskError(
                f"unknown study setting(s) {sorted(unknown)}; known: {sorted(f.name for f in fields(cls))}", path
            )
        try:
            return cls(**raw)
        except GlobalmaskError as exc:
            raise type(exc)(str(exc), path) from exc

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as written (stored in each record's plan).

        Returns
        -------
        dict
            The dataclass's fields.
        """
        return asdict(self)

    def plan_dict(self) -> dict[str, Any]:
        """The settings that decide what the runs compute (hashed into the plan).

        External test sets and a split file enter the plan by content (:attr:`Plan.external`, the
        split itself), never by path: the same files elsewhere on another machine are the same plan.
        (A study without a split file keeps ``"split": null``, so committed plans keep their hash.)

        Returns
        -------
        dict
            The hashed settings.
        """
        d = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY and k != "external_test"}
        for key in ("shifts_on_external", "shift_sizes", "recipe_rule"):
            if d[key] == LATER_DEFAULTS[key]:
                del d[key]
        if d["split"] is not None:
            del d["split"]
        return d

    def train_config(self, mode: InputMode | str, train_cases: int | None, seed: int, steps: int) -> TrainConfig:
        """The :class:`~globalmask.training.TrainConfig` of one run of this study.

        Parameters
        ----------
        mode : InputMode or str
            The run's input mode.
        train_cases : int or None
            Training cases drawn for the run (None: the whole training split).
        seed : int
            The run's seed (the study's seed plus its draw).
        steps : int
            The run's maximum steps (:meth:`steps_for` its training size).

        Returns
        -------
        TrainConfig
            The study's training settings (:data:`TRAIN_SETTINGS`, ``net``) with the run's own.
        """
        return TrainConfig.from_settings(self.to_dict(), mode=mode, train_cases=train_cases, seed=seed, steps=steps)

    def steps_for(self, size_label: str) -> int:
        """The maximum training steps of a run at training size ``size_label``.

        Parameters
        ----------
        size_label : str
            ``"1"``, ``"2"``, ..., or ``"all"``.

        Returns
        -------
        int
            ``steps``, or its entry for the size (else its ``default``).
        """
        if isinstance(self.steps, dict):
            if size_label in self.steps:
                return int(self.steps[size_label])
            if "default" in self.steps:
                return int(self.steps["default"])
            raise GlobalmaskError(f"'steps' has no entry for training size {size_label} (and no 'default')")
        return int(self.steps)

    def shift_levels(self, size_label: str | None = None) -> list[AnyVariation]:
        """The variations every model is scored under (none for a size outside ``shift_sizes``).

        Parameters
        ----------
        size_label : str, optional
            The model's training size (None: every variation).

        Returns
        -------
        list of Variation or ScannerShift
            The variations.
        """
        if (
            size_label is not None
            and self.shift_sizes is not None
            and size_label not in {str(s) for s in self.shift_sizes}
        ):
            return []
        assert isinstance(self.shifts, list)  # "suite" is expanded on construction
        return [variation_from_dict(s) for s in self.shifts]

    def candidate_recipes(self) -> list[str]:
        """Recipes of the GBM-only ablation (the default and the study's own recipe included).

        Returns
        -------
        list of str
            Canonical recipe specs, without duplicates.
        """
        fixed = [] if self.recipe == "auto" else [self.recipe]
        return list(dict.fromkeys(Recipe.parse(r).spec for r in [*fixed, DEFAULT_RECIPE, *self.ablation_recipes]))
