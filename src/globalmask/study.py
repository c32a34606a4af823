"""The paper's study as a protocol: input modes x training-set sizes x repeated draws, paired.

``run_study(dataset, out, config)`` trains every (mode, size, draw) model, evaluates each once on
the test split (and on simulated scanner changes of it), runs the GBM recipe ablation and writes
the statistics and report. Protocol, in brief:

* **Fixed split**: the dataset's ``splits.json`` (else a seeded one, saved in the study folder).
* **Paired subsets**: the training cases for (size n, draw d) depend only on (n, seed + d), so
  every mode is trained on exactly the same cases; ``subsets.json`` records them.
* **Model selection on validation only**; the test split is used once per model, at the end.
* **Resumable**: each run writes ``result.json`` last (atomically) and is skipped when present; an
  interrupted run resumes from its ``last.pt``. ``--workers`` spreads runs over processes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import Dataset, load_dataset, resolve_split, save_split, select_training_cases
from .errors import GlobalmaskError, OutputError
from .io import write_json, write_text, write_volume
from .masks import DEFAULT_RECIPE, Recipe
from .model import NetConfig, check_mode
from .preprocess import DEFAULT_WINDOW
from .shift import DEFAULT_SHIFTS, ScannerShift

ALL = "all"


@dataclass
class StudyConfig:
    """Everything that defines a study; loadable from YAML (see benchmarks/*/study.yaml)."""

    modes: list[str] = field(default_factory=lambda: ["ct", "gbm", "ct+gbm"])
    train_sizes: list[int | str] = field(default_factory=lambda: [1, 2, 4, 8, ALL])
    draws: int = 3
    full_draws: int | None = None  # draws at the full training size (default: draws)
    seed: int = 0
    recipe: str = DEFAULT_RECIPE  # or "auto": the ablation's validation winner drives the sweep
    spacing: list[float] | None = None
    window: list[float] = field(default_factory=lambda: list(DEFAULT_WINDOW))
    split: str | None = None
    steps: int | dict[str, int] = 600  # one number, or per size: {"1": 300, ..., "all": 1000}
    val_every: int = 100
    batch_size: int = 2
    lr: float = 2e-3
    patch_size: list[int] | None = None
    max_patch_voxels: int = 96**3
    net: dict[str, Any] = field(default_factory=dict)
    shifts: list[dict[str, Any]] = field(default_factory=lambda: [s.to_dict() for s in DEFAULT_SHIFTS])
    ablation_recipes: list[str] = field(default_factory=lambda: ["threshold:-300", "threshold:-500", "threshold:-100", "body", "bone", "otsu"])
    ablation_draws: int = 1
    overlays: int = 2
    device: str = "auto"
    reference: str | None = None  # "brain" or "heart": print the paper's numbers beside ours
    reference_structure: str | None = None  # the structure compared with the paper's (e.g. brainstem)

    def __post_init__(self) -> None:
        for m in self.modes:
            check_mode(m)
        for s in self.train_sizes:
            if s != ALL and (not isinstance(s, int) or s < 1):
                raise GlobalmaskError(f"train_sizes must be positive integers or 'all', got {s!r}")
        if self.recipe != "auto":
            Recipe.parse(self.recipe)
        if self.reference is not None and self.reference not in ("brain", "heart"):
            raise GlobalmaskError(f"reference must be 'brain' or 'heart', got {self.reference!r}")
        for r in self.ablation_recipes:
            Recipe.parse(r)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudyConfig":
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise GlobalmaskError(f"cannot read study configuration ({exc})", path) from exc
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise GlobalmaskError(f"unknown study setting(s) {sorted(unknown)}", path)
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def steps_for(self, size_label: str) -> int:
        if isinstance(self.steps, dict):
            if size_label in self.steps:
                return int(self.steps[size_label])
            if "default" in self.steps:
                return int(self.steps["default"])
            raise GlobalmaskError(f"'steps' has no entry for training size {size_label} (and no 'default')")
        return int(self.steps)

    def shift_levels(self) -> list[ScannerShift]:
        return [ScannerShift(**s) for s in self.shifts]

    def candidate_recipes(self) -> list[str]:
        """Recipes of the GBM-only ablation (the default and the study's own recipe included)."""
        fixed = [] if self.recipe == "auto" else [self.recipe]
        return list(dict.fromkeys(Recipe.parse(r).spec for r in [*fixed, DEFAULT_RECIPE, *self.ablation_recipes]))


@dataclass(frozen=True)
class RunSpec:
    """One model of the study."""

    kind: str  # "sweep" or "ablation"
    mode: str
    size_label: str  # "1", "2", ..., "all"
    n_cases: int
    draw: int
    seed: int
    recipe: str
    steps: int

    @property
    def name(self) -> str:
        # the recipe is part of the name, so the ablation's GBM-only run of the recipe the sweep
        # uses *is* the sweep's GBM-only full-size run: trained once, used by both
        return f"{_slug(self.recipe)}/{self.mode.replace('+', '_')}/n{self.size_label}-d{self.draw}"


def _slug(text: str) -> str:
    return text.replace(":", "_").replace("=", "").replace(",", "_").replace("-", "m").replace("+", "_")


def _size_label(size: int | str, n_train: int) -> tuple[str, int]:
    n = n_train if size == ALL else min(int(size), n_train)
    return (ALL if (size == ALL or n == n_train) else str(n)), n


def plan_ablation(config: StudyConfig, n_train: int) -> list[RunSpec]:
    """Stage 1: GBM-only models at the full training size, one per candidate recipe."""
    steps = config.steps_for(ALL)
    return [
        RunSpec("ablation", "gbm", ALL, n_train, d, config.seed + d, recipe, steps)
        for recipe in config.candidate_recipes()
        for d in range(config.ablation_draws)
    ]


def plan_sweep(config: StudyConfig, n_train: int, recipe: str) -> list[RunSpec]:
    """Stage 2: every (size, draw, mode) with the study's recipe; small sizes first."""
    runs: list[RunSpec] = []
    recipe = Recipe.parse(recipe).spec
    for size in config.train_sizes:
        label, n = _size_label(size, n_train)
        draws = (config.full_draws or config.draws) if label == ALL else config.draws
        for d in range(draws):
            for mode in config.modes:
                runs.append(RunSpec("sweep", mode, label, n, d, config.seed + d, recipe, config.steps_for(label)))
    return list({r.name: r for r in runs}.values())


def plan_runs(config: StudyConfig, n_train: int, recipe: str | None = None) -> list[RunSpec]:
    """All runs: the ablation, then the sweep (with ``recipe``, default the configured one)."""
    ablation = plan_ablation(config, n_train)
    sweep = plan_sweep(config, n_train, recipe or (DEFAULT_RECIPE if config.recipe == "auto" else config.recipe))
    names = {r.name for r in sweep}
    return [r for r in ablation if r.name not in names] + sweep


def training_subsets(runs: Sequence[RunSpec], train_ids: Sequence[str]) -> dict[str, list[str]]:
    """(size, draw) -> training case ids; the same for every mode by construction."""
    out: dict[str, list[str]] = {}
    for r in runs:
        key = f"n{r.size_label}-d{r.draw}"
        out[key] = select_training_cases(train_ids, None if r.size_label == ALL else r.n_cases, r.seed)
    return out


# ----------------------------------------------------------------------------------------------
# one run (runs in a worker process when --workers > 1)

_WORKER_CACHE: dict[str, Any] = {}


def _prepared(study_dir: Path, dataset_root: str, config: StudyConfig, recipe: str, split_file: str):
    """PreparedData for a recipe, loaded once per process from the study's preprocessing cache."""
    from .train import prepare_data

    key = f"prep:{recipe}"
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = prepare_data(
            dataset_root,
            recipe,
            config.spacing,
            config.window,
            split_file,
            case_ids=None,
            cache_dir=study_dir / "cache",
            progress=False,
        )
    return _WORKER_CACHE[key]


def _test_volumes(ds: Dataset, ids: Sequence[str]):
    from .data import load_case

    key = "test:" + ",".join(ids)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = {i: load_case(ds.cases[i], ds.labels) for i in ids}
    return _WORKER_CACHE[key]


def execute_run(study_dir: str | Path, dataset_root: str, config_dict: dict, split_file: str, run: RunSpec, threads: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) one model, then evaluate it on the test split once; idempotent."""
    import torch

    from .infer import Predictor
    from .metrics import evaluate_volumes
    from .preprocess import restore_volume
    from .train import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    study_dir = Path(study_dir)
    config = StudyConfig(**config_dict)
    run_dir = study_dir / "runs" / run.name
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    prepared = _prepared(study_dir, dataset_root, config, run.recipe, split_file)
    tcfg = TrainConfig(
        mode=run.mode,
        train_cases=None if run.size_label == ALL else run.n_cases,
        seed=run.seed,
        steps=run.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        patch_size=tuple(config.patch_size) if config.patch_size else None,
        max_patch_voxels=config.max_patch_voxels,
        val_every=config.val_every,
        net=NetConfig(**config.net),
    )
    result = train(prepared, run_dir / "model", tcfg, device=config.device, resume=True, progress=progress)
    predictor = Predictor(result.model_path, device=config.device)
    ds, split = prepared.dataset, prepared.split
    rows: list[dict] = []
    eval_sets: list[tuple[str, Sequence[str], list[ScannerShift | None]]] = [("test", split.test, [None, *config.shift_levels()])]
    if run.kind == "ablation" or (run.mode == "gbm" and run.size_label == ALL):
        eval_sets.append(("validation", split.validation, [None]))  # recipe choice is made on validation only
    for subset, ids, shifts in eval_sets:
        volumes = _test_volumes(ds, ids)
        for shift in shifts:
            for case_id in ids:
                ct, label = volumes[case_id]
                shifted = ct if shift is None else shift.apply(ct, seed=config.seed, case_id=case_id)
                prepared_case = predictor.prepare(shifted, case_id)
                pred = restore_volume(predictor.probabilities(prepared_case), prepared_case.geometry)
                if shift is None and subset == "test":
                    write_volume(pred, run_dir / "predictions" / f"{case_id}.nii.gz")
                for row in evaluate_volumes(pred, label, ds.labels, case_id):
                    row.update(subset=subset, shift="none" if shift is None else shift.name)
                    rows.append(row)
    df = pd.DataFrame(rows)
    for k, v in (("mode", run.mode), ("recipe", run.recipe), ("size", run.size_label), ("n_train", len(result.train_ids)), ("draw", run.draw), ("seed", run.seed)):
        df.insert(0, k, v)
    write_text(run_dir / "metrics.csv", df.to_csv(index=False))
    summary = {
        "run": run.name,
        **asdict(run),
        "train_ids": result.train_ids,
        "best_val_dice": result.best_val_dice,
        "best_step": result.best_step,
        "train_seconds": result.seconds,
        "total_seconds": time.perf_counter() - t0,
        "test_dice_mean": float(df[(df["subset"] == "test") & (df["shift"] == "none")]["dice"].mean()),
    }
    write_json(result_path, summary)
    return summary


# ----------------------------------------------------------------------------------------------
# the whole study


def run_study(
    dataset: str | Path,
    out: str | Path,
    config: StudyConfig | None = None,
    workers: int = 1,
    max_runs: int | None = None,
    command: str | None = None,
    progress: bool = True,
    echo=print,
) -> dict | None:
    """Run (or continue) a study into ``out``; returns the results dict when every run is done.

    ``max_runs`` stops after that many runs have been executed in this call (the rest stay
    pending and a later call continues), e.g. to spread a study over scheduler jobs.
    """
    from tqdm.auto import tqdm

    from .train import prepare_data

    config = config or StudyConfig()
    out = Path(out)
    ds = load_dataset(dataset)
    if out.resolve() == ds.root.resolve() or out.resolve().is_relative_to(ds.root.resolve()):
        raise OutputError(f"study folder must not be inside the dataset folder {ds.root}", out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "study_config.json"
    if cfg_path.exists():
        previous = json.loads(cfg_path.read_text(encoding="utf-8"))
        same = {k: v for k, v in previous["config"].items() if k != "device"} == {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "device"}
        if not same or previous["dataset"] != str(ds.root.resolve()):
            raise OutputError("study folder holds a study with another configuration or dataset; choose another --out", out)
    else:
        write_json(cfg_path, {"dataset": str(ds.root.resolve()), "config": config.to_dict(), "command": command})

    split, source = resolve_split(ds, config.split, config.seed)
    split_path = out / "splits.json"
    save_split(split, split_path, note=f"split used by this study; source: {source}")
    n_train = len(split.train)
    args = (str(out), str(ds.root), config.to_dict(), str(split_path))
    budget = [max_runs]
    prepared_recipes: set[str] = set()

    def is_done(r: RunSpec) -> bool:
        return (out / "runs" / r.name / "result.json").exists()

    def execute(runs: list[RunSpec], stage: str) -> bool:
        """Run what is pending of ``runs`` (within the max_runs budget); True when all are done."""
        for recipe in sorted({r.recipe for r in runs} - prepared_recipes):  # preprocess once, before workers start
            prepare_data(ds, recipe, config.spacing, config.window, split_path, case_ids=None, cache_dir=out / "cache", progress=progress)
            prepared_recipes.add(recipe)
        pending = [r for r in runs if not is_done(r)]
        echo(f"study {stage}: {len(runs)} runs ({len(runs) - len(pending)} already done); {n_train}/{len(split.validation)}/{len(split.test)} train/validation/test cases; workers {workers}")
        if budget[0] is not None:
            pending, budget[0] = pending[: budget[0]], max(0, budget[0] - len(pending))
        bar = tqdm(total=len(runs), initial=len(runs) - len([r for r in runs if not is_done(r)]), desc=f"study {stage}", unit="run", disable=not progress)

        def report(name: str, res: dict) -> None:
            bar.update(1)
            bar.write(f"  done {name}: test Dice {res['test_dice_mean']:.3f} ({res['total_seconds']:.0f} s)")

        if workers <= 1:
            for r in pending:
                bar.set_postfix_str(r.name)
                report(r.name, execute_run(*args, r, progress=progress))
        else:
            import multiprocessing as mp

            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(execute_run, *args, r, threads=threads, progress=False): r for r in pending}
                try:
                    remaining = set(futures)
                    while remaining:
                        finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                        for f in finished:
                            report(futures[f].name, f.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        bar.close()
        return all(is_done(r) for r in runs)

    t0 = time.perf_counter()

    def paused() -> None:
        echo(f"study paused after {time.perf_counter() - t0:.0f} s; run the same command again to continue")

    # stage 1: GBM-only recipe ablation; the choice is made on the validation split only
    ablation = plan_ablation(config, n_train)
    if not execute(ablation, "stage 1/2 (GBM recipe ablation)"):
        return paused()
    table = recipe_ablation(collect_per_case(out, ablation))
    winner = str(table.iloc[0]["recipe"])
    main_recipe = winner if config.recipe == "auto" else Recipe.parse(config.recipe).spec
    write_json(out / "recipe_choice.json", {"winner_on_validation": winner, "sweep_recipe": main_recipe, "ranking": _nan_to_none(table.to_dict(orient="records"))})

    # stage 2: modes x sizes x draws with the chosen recipe
    sweep = plan_sweep(config, n_train, main_recipe)
    runs = list({r.name: r for r in [*ablation, *sweep]}.values())
    write_json(out / "subsets.json", training_subsets(sweep, split.train))
    write_json(out / "plan.json", [{"name": r.name, **asdict(r)} for r in runs])
    if not execute(sweep, "stage 2/2 (modes x training sizes x draws)"):
        return paused()

    from .report import write_report

    results = collect_and_analyse(out, config, runs, ds, split, source, main_recipe, winner)
    write_report(out, results, config, command=command)
    echo(f"study complete in {time.perf_counter() - t0:.0f} s: report at {out / 'report.md'}")
    return results


# ----------------------------------------------------------------------------------------------
# statistics (pure functions of the per-case table)


def collect_per_case(out: Path, runs: Sequence[RunSpec]) -> pd.DataFrame:
    return pd.concat([pd.read_csv(out / "runs" / r.name / "metrics.csv") for r in runs], ignore_index=True)


def summary_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """mean ± std per (recipe, mode, size, subset, shift, structure), plus 'all' structures."""
    keys = ["recipe", "mode", "size", "subset", "shift"]
    scored = per_case[per_case["status"] != "absent"]
    rows = []
    for key, g in scored.groupby(keys, sort=False):
        for structure, gs in [*g.groupby("structure", sort=False), ("all", g)]:
            rows.append(
                {
                    **dict(zip(keys, key)),
                    "structure": structure,
                    "n": len(gs),
                    "dice_mean": gs["dice"].mean(),
                    "dice_std": gs["dice"].std(ddof=1),
                    "com_mm_mean": gs["com_mm"].mean(),
                    "com_mm_std": gs["com_mm"].std(ddof=1),
                    "hd95_mm_mean": gs["hd95_mm"].mean(),
                    "hd95_mm_std": gs["hd95_mm"].std(ddof=1),
                    "missed": int((gs["status"] == "missed").sum()),
                }
            )
    return pd.DataFrame(rows)


def paired_comparison(per_case: pd.DataFrame, a: str, b: str, size: str, structure: str | None = None, shift: str = "none", recipe: str | None = None) -> dict:
    """Compare mode ``a`` with mode ``b`` at one training size on the test split.

    Relative improvement = (mean Dice of a - mean Dice of b) / mean Dice of b x 100, over every
    (draw, test case, structure) score. The Wilcoxon signed-rank test (two-sided) pairs the
    *test cases*: each case's Dice averaged over draws (and structures, unless one is given), so
    the unit of replication is the patient, not a repeated measurement of one.
    """
    from scipy.stats import wilcoxon

    sel = per_case[(per_case["subset"] == "test") & (per_case["shift"] == shift) & (per_case["size"].astype(str) == str(size)) & (per_case["status"] != "absent")]
    if recipe is not None:
        sel = sel[sel["recipe"] == recipe]
    if structure is not None:
        sel = sel[sel["structure"] == structure]
    da, db = sel[sel["mode"] == a], sel[sel["mode"] == b]
    if da.empty or db.empty:
        return {}
    key = ["draw", "case", "structure"]
    merged = da[key + ["dice"]].merge(db[key + ["dice"]], on=key, suffixes=("_a", "_b"))
    if len(merged) != len(da) or len(merged) != len(db):
        raise GlobalmaskError(f"runs of {a} and {b} at size {size} are not paired (different draws or cases)")
    per_case_mean = merged.groupby("case")[["dice_a", "dice_b"]].mean()
    diff = per_case_mean["dice_a"] - per_case_mean["dice_b"]
    if len(diff) < 2 or np.allclose(diff, 0):
        p = 1.0
    else:
        p = float(wilcoxon(per_case_mean["dice_a"], per_case_mean["dice_b"], alternative="two-sided").pvalue)
    mean_a, mean_b = float(merged["dice_a"].mean()), float(merged["dice_b"].mean())
    return {
        "a": a,
        "b": b,
        "size": str(size),
        "structure": structure or "all",
        "n_pairs": int(len(merged)),
        "n_cases": int(len(per_case_mean)),
        "dice_a": mean_a,
        "dice_b": mean_b,
        "relative_improvement_pct": (mean_a - mean_b) / mean_b * 100 if mean_b > 0 else float("inf"),
        "cases_a_better": int((diff > 0).sum()),
        "wilcoxon_p": p,
    }


def shift_drops(per_case: pd.DataFrame, recipe: str) -> pd.DataFrame:
    """Dice drop per mode, size and shift level: mean Dice unshifted minus mean Dice shifted."""
    sel = per_case[(per_case["recipe"] == recipe) & (per_case["subset"] == "test") & (per_case["status"] != "absent")]
    base = sel[sel["shift"] == "none"].groupby(["mode", "size"])["dice"].mean()
    rows = []
    for (mode, size, shift), g in sel[sel["shift"] != "none"].groupby(["mode", "size", "shift"], sort=False):
        rows.append({"mode": mode, "size": str(size), "shift": shift, "dice_none": base[(mode, size)], "dice_shifted": g["dice"].mean(), "dice_drop": base[(mode, size)] - g["dice"].mean()})
    return pd.DataFrame(rows)


def recipe_ablation(per_case: pd.DataFrame) -> pd.DataFrame:
    """GBM-only models at the full training size, one row per recipe, best first.

    Ranked on the **validation** split only (fewest missed structures, then lowest mean
    centre-of-mass error, then highest Dice); test figures are reported beside, never used.
    """
    sel = per_case[(per_case["mode"] == "gbm") & (per_case["size"].astype(str) == ALL) & (per_case["shift"] == "none") & (per_case["status"] != "absent")]
    rows = []
    for recipe, g in sel.groupby("recipe", sort=False):
        row: dict[str, Any] = {"recipe": recipe}
        for subset in ("validation", "test"):
            gs = g[g["subset"] == subset]
            row[f"{subset}_dice"] = gs["dice"].mean()
            row[f"{subset}_com_mm"] = gs["com_mm"].mean()
            row[f"{subset}_missed"] = int((gs["status"] == "missed").sum())
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["validation_missed", "validation_com_mm", "validation_dice"], ascending=[True, True, False]).reset_index(drop=True)
    return df


def collect_and_analyse(out: Path, config: StudyConfig, runs: Sequence[RunSpec], ds: Dataset, split, split_source: str, sweep_recipe: str, winner: str) -> dict:
    per_case = collect_per_case(out, runs)
    write_text(out / "per_case.csv", per_case.to_csv(index=False))
    summary = summary_table(per_case)
    write_text(out / "summary.csv", summary.to_csv(index=False))
    sizes = [str(s) for s in dict.fromkeys(r.size_label for r in runs if r.kind == "sweep")]
    structures = list(ds.structures)
    comparisons = []
    for a, b in (("ct+gbm", "ct"), ("gbm", "ct"), ("ct+coords", "ct")):
        if a in config.modes and b in config.modes:
            for size in sizes:
                for structure in [None, *structures]:
                    c = paired_comparison(per_case, a, b, size, structure, recipe=sweep_recipe)
                    if c:
                        comparisons.append(c)
    drops = shift_drops(per_case, sweep_recipe)
    ablation = recipe_ablation(per_case)
    results = {
        "dataset": str(ds.root),
        "dataset_name": ds.name,
        "split_source": split_source,
        "n_train": len(split.train),
        "n_validation": len(split.validation),
        "n_test": len(split.test),
        "structures": structures,
        "config": config.to_dict(),
        "sweep_recipe": sweep_recipe,
        "sizes": sizes,
        "runs": [{**json.loads((out / "runs" / r.name / "result.json").read_text(encoding="utf-8")), "role": r.kind} for r in runs],
        "summary": summary.to_dict(orient="records"),
        "comparisons": comparisons,
        "shift_drops": drops.to_dict(orient="records"),
        "recipe_ablation": ablation.to_dict(orient="records"),
        "recipe_winner": winner,
    }
    write_json(out / "results.json", _nan_to_none(results))
    return results


def _nan_to_none(obj):
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return _nan_to_none(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# CLI


def add_study_parser(sub) -> None:
    p = sub.add_parser("study", help="the paper's study: modes x training sizes x draws, paired, with a report")
    p.add_argument("dataset", type=Path)
    p.add_argument("--config", type=Path, default=None, help="study.yaml (see benchmarks/openkbp/study.yaml)")
    p.add_argument("--out", type=Path, default=None, help="study folder (default: study-<dataset folder name>)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel worker processes (threads are split between them)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (overrides the configuration)")
    p.add_argument("--max-runs", type=int, default=None, help="execute at most this many runs now; run again to continue")
    p.set_defaults(handler=_cmd_study)


def _cmd_study(args) -> None:
    import shlex
    import sys

    config = StudyConfig.from_yaml(args.config) if args.config else StudyConfig()
    if args.device:
        config = replace(config, device=args.device)
    out = args.out or Path(f"study-{Path(args.dataset).resolve().name}")
    command = "globalmask " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_study(args.dataset, out, config, workers=args.workers, max_runs=args.max_runs, command=command)
