"""``globalmask demo``: the whole pipeline on the built-in phantom cohort, in minutes on a laptop.

Generates a head-and-neck (or thorax) phantom cohort whose "scanners" differ in intensity while
anatomy stays consistent, trains the three input modes on the same few training cases, segments
the held-out test cases and prints Dice and centre-of-mass error side by side. Re-running
continues where it stopped (finished models are reused).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from .dataset import load_dataset, make_split, save_split
from .evaluation import evaluate_folder
from .infer import Predictor
from .io import write_text
from .metrics import mean_std_text, summarize
from .model import MODES, InputMode, NetConfig
from .phantom import make_phantom_dataset
from .training import DataConfig, TrainConfig, train


@dataclass(frozen=True)
class DemoSettings:
    cases: int
    shape: tuple[int, int, int]
    train_cases: int
    steps: int  # a maximum when patience is set
    val_every: int
    patience: int | None  # None: a fixed budget (the installation check)


#: Demo defaults: every model trains to a validated plateau (about 800 steps on two CPU cores),
#: because a model stopped while it was still improving would make the comparison one of budgets.
DEMO = DemoSettings(cases=30, shape=(64, 64, 64), train_cases=3, steps=1500, val_every=50, patience=5)
QUICK = DemoSettings(cases=9, shape=(48, 48, 48), train_cases=2, steps=20, val_every=10, patience=None)


def demo_net() -> NetConfig:
    return NetConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)


def run_demo(
    out: str | Path = "globalmask-demo",
    kind: str = "headneck",
    train_cases: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str = "auto",
    quick: bool = False,
    modes: Sequence[InputMode | str] = MODES,
    echo: Callable[[str], object] = print,
) -> pd.DataFrame:
    """Run the demo into ``out`` and return the per-mode summary table."""
    settings = QUICK if quick else DEMO
    if train_cases is not None:
        settings = replace(settings, train_cases=train_cases)
    if steps is not None:
        settings = replace(settings, steps=steps)
    out = Path(out)
    t0 = time.perf_counter()
    data = make_phantom_dataset(out / f"phantom_{kind}", kind=kind, cases=settings.cases, seed=seed, shape=settings.shape, progress=True)
    ds = load_dataset(data)
    if ds.split_file is None:
        save_split(make_split(ds.cases, seed=seed), data / "splits.json", note=f"seeded 60:20:20 split (seed {seed})")
        ds = load_dataset(data)
    split = ds.load_split()
    assert split is not None  # saved above when the cohort had none
    echo(
        f"phantom cohort: {len(ds)} {kind} cases at {settings.shape[0]}^3 "
        f"({len(split.train)} train / {len(split.validation)} validation / {len(split.test)} test); "
        f"each mode trains on the same {settings.train_cases} case(s) "
        + (f"to a validated plateau (at most {settings.steps} steps)" if settings.patience else f"for {settings.steps} steps")
    )
    tables = []
    trained = []
    for mode in map(InputMode.parse, modes):
        cfg = TrainConfig.from_settings(asdict(settings), mode=mode, seed=seed, net=demo_net())
        run = out / "runs" / mode.replace("+", "_")
        result = train(ds, run, cfg, DataConfig(cache_dir=out / "cache"), device=device, resume=True)
        state = {True: "plateau", False: "NOT converged: still improving at the maximum", None: "fixed budget"}[result.converged]
        trained.append(f"{mode.value}: best validation Dice {result.best_val_dice:.3f} at step {result.best_step}, stopped at {result.steps} ({state})")
        pred_dir = out / "predictions" / mode.replace("+", "_")
        Predictor(result.model_path, device=device).predict_files([ds.cases[c].image for c in split.test], pred_dir, progress=True)
        per_case, _ = evaluate_folder(pred_dir, data / "labelsTr", ds.labels, cases=split.test)
        per_case.insert(0, "mode", mode.value)
        tables.append(per_case)
    per_case = pd.concat(tables, ignore_index=True)
    table = demo_table(per_case)
    text = table.to_string(index=False)
    write_text(out / "demo_per_case.csv", per_case.to_csv(index=False))
    write_text(out / "demo_results.md", "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n" + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in table.values) + "\n")
    echo(f"\nTest-set results ({len(split.test)} held-out phantom cases; mean ± std over cases and structures):\n")
    echo(text)
    echo(f"\nper-structure Dice:\n{structure_table(per_case).to_string()}")
    echo("\ntraining: " + "; ".join(trained))
    echo(f"\nwall time {time.perf_counter() - t0:.0f} s; results in {out}")
    return table


def demo_table(per_case: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for mode, df in per_case.groupby("mode", sort=False):
        s = summarize(df.drop(columns="mode"))
        allrow = s[s["structure"] == "all"].iloc[0]
        rows.append(
            {
                "mode": mode,
                "Dice": mean_std_text(allrow["dice_mean"], allrow["dice_std"], 3),
                "CoM error (mm)": mean_std_text(allrow["com_mm_mean"], allrow["com_mm_std"], 2),
                "HD95 (mm)": mean_std_text(allrow["hd95_mm_mean"], allrow["hd95_mm_std"], 2),
                "missed": int(allrow["n_missed"]),
            }
        )
    return pd.DataFrame(rows)


def structure_table(per_case: pd.DataFrame) -> pd.DataFrame:
    return per_case.pivot_table(index="structure", columns="mode", values="dice", aggfunc="mean", sort=False).round(3)
