"""What defines a study: :class:`StudyConfig`, loadable from YAML (see benchmarks/*/study.yaml)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import GlobalmaskError
from ..masks import DEFAULT_RECIPE, Recipe
from ..model import NetConfig, check_mode
from ..shift import DEFAULT_SHIFTS, VARIATION_SUITE, AnyVariation, variation_from_dict

ALL = "all"

#: Settings that change how a study is executed or reported, never what a run computes: they are
#: left out of the plan hash, so records made on a GPU and on a CPU belong to the same plan.
EXECUTION_ONLY = ("device", "overlays", "reference", "reference_structure")

#: Settings added after studies were committed: left out of the plan hash while at their default,
#: so the plans (and run ids) of earlier studies stay what they were. ``external_test`` is never
#: hashed as written (a path differs between machines): the plan hashes the external sets' content.
LATER_DEFAULTS: dict[str, Any] = {"external_test": [], "shifts_on_external": False, "shift_sizes": None, "recipe_rule": "validation"}

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
    max_patch_voxels: int = 96**3
    net: dict[str, Any] = field(default_factory=dict)
    shifts: list[dict[str, Any]] | str = field(default_factory=lambda: [s.to_dict() for s in DEFAULT_SHIFTS])  # or "suite"
    shift_sizes: list[int | str] | None = None  # training sizes whose models are scored under the shifts (None: every size)
    ablation_recipes: list[str] = field(default_factory=lambda: ["threshold:-300", "threshold:-500", "threshold:-100", "body", "bone", "otsu"])
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
        def bad(name: str, given: Any, accepted: str) -> GlobalmaskError:
            return GlobalmaskError(f"study setting '{name}': got {given!r}, expected {accepted}")

        if not self.modes:
            raise bad("modes", self.modes, "a non-empty list of ct, gbm, ct+gbm, ct+coords")
        for m in self.modes:
            check_mode(m)
        if not self.train_sizes:
            raise bad("train_sizes", self.train_sizes, "a non-empty list of positive integers or 'all'")
        for s in self.train_sizes:
            if s != ALL and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
                raise bad("train_sizes", s, "positive integers or 'all'")
        for name in ("draws", "ablation_draws", "val_every", "batch_size", "max_patch_voxels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, v, "an integer >= 1")
        if self.full_draws is not None and (not isinstance(self.full_draws, int) or self.full_draws < 1):
            raise bad("full_draws", self.full_draws, "an integer >= 1 (or null: same as draws)")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise bad("patience", self.patience, "an integer >= 1 (or null: never stop early)")
        if not isinstance(self.overlays, int) or self.overlays < 0:
            raise bad("overlays", self.overlays, "an integer >= 0")
        if self.optimizer not in ("adamw", "sgd"):
            raise bad("optimizer", self.optimizer, "'adamw' or 'sgd'")
        if self.schedule not in ("poly", "cosine", "constant"):
            raise bad("schedule", self.schedule, "'poly', 'cosine' or 'constant'")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise bad("warmup_steps", self.warmup_steps, "an integer >= 0")
        if not isinstance(self.bf16, bool):
            raise bad("bf16", self.bf16, "true or false")
        if self.recipe_rule not in ("validation", "robust"):
            raise bad("recipe_rule", self.recipe_rule, "'validation' or 'robust'")
        if not isinstance(self.shifts_on_external, bool):
            raise bad("shifts_on_external", self.shifts_on_external, "true or false")
        if not isinstance(self.external_test, list) or not all(isinstance(v, str) and v.strip() for v in self.external_test):
            raise bad("external_test", self.external_test, "a list of dataset folders (nnU-Net layout)")
        if len(set(self.external_test)) != len(self.external_test):
            raise bad("external_test", self.external_test, "each dataset once")
        for name in ("lr", "min_delta", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise bad(name, v, "a finite number > 0" if name == "lr" else "a finite number >= 0")
        steps = self.steps.values() if isinstance(self.steps, dict) else [self.steps]
        for v in steps:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad("steps", self.steps, "an integer >= 1, or a mapping of training size to integers >= 1")
        if self.spacing is not None and (len(self.spacing) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 50 for v in self.spacing)):
            raise bad("spacing", self.spacing, "three finite spacings in mm, each in (0, 50]")
        if self.window != "percentile" and (
            isinstance(self.window, str)
            or len(self.window) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.window)
            or self.window[0] >= self.window[1]
        ):
            raise bad("window", self.window, "[low, high] in HU with low < high, or \"percentile\"")
        if self.patch_size is not None and (len(self.patch_size) != 3 or not all(isinstance(v, int) and v >= 1 for v in self.patch_size)):
            raise bad("patch_size", self.patch_size, "three positive integers")
        if self.recipe != "auto":
            Recipe.parse(self.recipe)
        for r in self.ablation_recipes:
            Recipe.parse(r)
        try:
            NetConfig(**self.net)
        except TypeError as exc:
            raise bad("net", self.net, f"settings of NetConfig ({exc})") from exc
        if self.shifts == SUITE:
            self.shifts = [v.to_dict() for v in VARIATION_SUITE]
        if not isinstance(self.shifts, list) or not all(isinstance(v, dict) for v in self.shifts):
            raise bad("shifts", self.shifts, f"a list of variations (mappings) or {SUITE!r}")
        for shift in self.shifts:
            try:
                variation_from_dict(shift)
            except GlobalmaskError as exc:
                raise bad("shifts", shift, f"a variation of globalmask.shift ({exc})") from exc
        self.shifts = [variation_from_dict(v).to_dict() for v in self.shifts]  # canonical: every field and the name written out
        names = [v["name"] for v in self.shifts]
        if len(set(names)) != len(names) or "none" in names:
            raise bad("shifts", names, "distinct names other than 'none'")
        if self.shift_sizes is not None and (not isinstance(self.shift_sizes, list) or any(v not in self.train_sizes for v in self.shift_sizes)):
            raise bad("shift_sizes", self.shift_sizes, f"null (every size) or a list of training sizes of this study ({self.train_sizes})")
        if self.reference is not None and self.reference not in ("brain", "heart"):
            raise bad("reference", self.reference, "'brain', 'heart' or null")

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise GlobalmaskError(f"cannot read study configuration ({exc})", path) from exc
        if not isinstance(raw, dict):
            raise GlobalmaskError("study configuration must be a mapping of settings", path)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise GlobalmaskError(f"unknown study setting(s) {sorted(unknown)}; known: {sorted(f.name for f in fields(cls))}", path)
        try:
            return cls(**raw)
        except GlobalmaskError as exc:
            raise GlobalmaskError(str(exc), path) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plan_dict(self) -> dict[str, Any]:
        """The settings that decide what the runs compute (hashed into the plan).

        External test sets enter the plan by content (:attr:`Plan.external`), not by path.
        """
        d = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_ONLY and k != "external_test"}
        for key in ("shifts_on_external", "shift_sizes", "recipe_rule"):
            if d[key] == LATER_DEFAULTS[key]:
                del d[key]
        return d

    def steps_for(self, size_label: str) -> int:
        if isinstance(self.steps, dict):
            if size_label in self.steps:
                return int(self.steps[size_label])
            if "default" in self.steps:
                return int(self.steps["default"])
            raise GlobalmaskError(f"'steps' has no entry for training size {size_label} (and no 'default')")
        return int(self.steps)

    def shift_levels(self, size_label: str | None = None) -> list[AnyVariation]:
        """The variations every model is scored under (none for a size outside ``shift_sizes``)."""
        if size_label is not None and self.shift_sizes is not None and size_label not in {str(s) for s in self.shift_sizes}:
            return []
        assert isinstance(self.shifts, list)  # "suite" is expanded on construction
        return [variation_from_dict(s) for s in self.shifts]

    def candidate_recipes(self) -> list[str]:
        """Recipes of the GBM-only ablation (the default and the study's own recipe included)."""
        fixed = [] if self.recipe == "auto" else [self.recipe]
        return list(dict.fromkeys(Recipe.parse(r).spec for r in [*fixed, DEFAULT_RECIPE, *self.ablation_recipes]))
