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

from .dataset import Dataset, Split, load_dataset, make_split, save_split
from .evaluation import evaluate_folder
from .infer import Predictor
from .io import write_text
from .metrics import mean_std_text, summarize
from .model import MODES, InputMode, NetConfig
from .phantom import make_phantom_dataset
from .training import DataConfig, TrainConfig, train


@dataclass(frozen=True)
class DemoSettings:
    """The size of a demo: cohort, training cases and step budget.

    Attributes
    ----------
    cases : int
        Phantom cases generated.
    shape : tuple of int
        Their shape (voxels).
    train_cases : int
        Training cases each mode trains on.
    steps : int
        The maximum steps (a fixed budget without ``patience``).
    val_every : int
        Steps between validation checks.
    patience : int or None
        Validation checks without improvement before stopping; None: a fixed budget.
    """
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
    """The demo's small U-Net (four levels, one residual unit), quick on a CPU.

    Returns
    -------
    NetConfig
        The architecture.
    """
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
    """Run the demo into ``out`` and return the per-mode summary table.

    Parameters
    ----------
    out : str or Path
        The demo folder (cohort, runs, predictions, results); reused when re-run.
    kind : str
        'headneck' or 'thorax' phantoms.
    train_cases : int or None
        Training cases per mode; None for the settings' own.
    steps : int or None
        Maximum steps; None for the settings' own.
    seed : int
        Seed of the cohort, the split and the training.
    device : str
        'auto', 'cpu' or 'cuda'.
    quick : bool
        The few-step installation check instead of the full demo.
    modes : sequence of InputMode or str
        The input modes to train and compare.
    echo : callable
        Called with each block of text to show.

    Returns
    -------
    pandas.DataFrame
        One row per mode: Dice, CoM error, HD95 (mean ± std) and missed structures.
    """
    settings = QUICK if quick else DEMO
    if train_cases is not None:
        settings = replace(settings, train_cases=train_cases)
    if steps is not None:
        settings = replace(settings, steps=steps)
    out = Path(out)
    t0 = time.perf_counter()
    data, ds, split = _demo_cohort(out, kind, settings, seed)
    echo(
        f"phantom cohort: {len(ds)} {kind} cases at {settings.shape[0]}^3 "
        f"({len(split.train)} train / {len(split.validation)} validation / {len(split.test)} test); "
        f"each mode trains on the same {settings.train_cases} case(s) "
        + (
            f"to a validated plateau (at most {settings.steps} steps)"
            if settings.patience
            else f"for {settings.steps} steps"
        )
    )
    tables = []
    trained = []
    for mode in map(InputMode.parse, modes):
        per_case, line = _run_mode(out, data, ds, split, mode, settings, seed, device)
        trained.append(line)
        tables.append(per_case)
    per_case = pd.concat(tables, ignore_index=True)
    table = demo_table(per_case)
    text = table.to_string(index=False)
    write_text(out / "demo_per_case.csv", per_case.to_csv(index=False))
    write_text(out / "demo_results.md", _markdown(table))
    echo(f"\nTest-set results ({len(split.test)} held-out phantom cases; mean ± std over cases and structures):\n")
    echo(text)
    echo(f"\nper-structure Dice:\n{structure_table(per_case).to_string()}")
    echo("\ntraining: " + "; ".join(trained))
    echo(f"\nwall time {time.perf_counter() - t0:.0f} s; results in {out}")
    return table


def _demo_cohort(out: Path, kind: str, settings: DemoSettings, seed: int) -> tuple[Path, Dataset, Split]:
    """The phantom cohort in ``out`` (made once) with its split (a seeded one saved beside it when it has none)."""
    data = make_phantom_dataset(
        out / f"phantom_{kind}", kind=kind, cases=settings.cases, seed=seed, shape=settings.shape, progress=True
    )
    ds = load_dataset(data)
    if ds.split_file is None:
        save_split(make_split(ds.cases, seed=seed), data / "splits.json", note=f"seeded 60:20:20 split (seed {seed})")
        ds = load_dataset(data)
    split = ds.load_split()
    assert split is not None  # saved above when the cohort had none
    return data, ds, split


def _run_mode(
    out: Path, data: Path, ds: Dataset, split: Split, mode: InputMode, settings: DemoSettings, seed: int, device: str
) -> tuple[pd.DataFrame, str]:
    """Train one mode (resuming a finished run), segment the test cases and score them.

    Returns the per-case table (with a ``mode`` column) and a line saying how the training ended.
    """
    cfg = TrainConfig.from_settings(asdict(settings), mode=mode, seed=seed, net=demo_net())
    run = out / "runs" / mode.replace("+", "_")
    result = train(ds, run, cfg, DataConfig(cache_dir=out / "cache"), device=device, resume=True)
    states = {True: "plateau", False: "NOT converged: still improving at the maximum", None: "fixed budget"}
    state = states[result.converged]
    line = (
        f"{mode.value}: best validation Dice {result.best_val_dice:.3f} at step {result.best_step}, stopped at "
        f"{result.steps} ({state})"
    )
    pred_dir = out / "predictions" / mode.replace("+", "_")
    test_images = [ds.cases[c].image for c in split.test]
    Predictor(result.model_path, device=device).predict_files(test_images, pred_dir, progress=True)
    per_case, _ = evaluate_folder(pred_dir, data / "labelsTr", ds.labels, cases=split.test)
    per_case.insert(0, "mode", mode.value)
    return per_case, line


def _markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table (header, rule, one line per row)."""
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    return header + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in table.values) + "\n"

def demo_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """The per-mode summary table of the demo (the ``all`` row of :func:`~globalmask.metrics.summarize`).

    Parameters
    ----------
    per_case : pandas.DataFrame
        The per-case table with a ``mode`` column.

    Returns
    -------
    pandas.DataFrame
        One row per mode, values as text ('0.712 ± 0.083').
    """
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
    """Mean Dice per structure (rows) and mode (columns).

    Parameters
    ----------
    per_case : pandas.DataFrame
        The per-case table with a ``mode`` column.

    Returns
    -------
    pandas.DataFrame
        Dice rounded to three decimals.
    """
    return per_case.pivot_table(index="structure", columns="mode", values="dice", aggfunc="mean", sort=False).round(3)
