"""The paper's study as a protocol: input modes x training-set sizes x repeated draws, paired.

The study is split by job: :mod:`.config` (what defines it), :mod:`.plan` (the runs, their ids
and the plan hash), :mod:`.records` (one JSON result per run), :mod:`.runner` (executing runs:
in process, a process pool, shards or Ray), :mod:`.stats` (statistics over records) and
:mod:`.report` (figures and ``report.md``). Protocol, in brief:

* **Fixed split**: the dataset's ``splits.json`` (else a seeded one, saved in the study folder).
* **Paired subsets**: the training cases for (size n, draw d) depend only on (n, seed + d), so
  every mode is trained on exactly the same cases; ``subsets.json`` records them.
* **Model selection on validation only**; the test split is used once per model, at the end.
* **Resumable and distributable**: each run writes ``records/<run_id>.json`` last (atomically)
  and is skipped when present; ``--shard i/N`` runs a slice; records of many machines merge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .. import guard
from ..dataset import Dataset, Split, load_dataset
from ..errors import DatasetError
from .config import ALL, StudyConfig
from .plan import Plan, RunSpec, dataset_fingerprint, make_plan, parse_shard, shard_runs, training_subsets
from .records import RECORDS_DIR, RecordError, RunRecord, load_records, read_record
from .report import write_outputs
from .runner import Progress, execute_run, run_plan
from .stats import StudyResults, analyse, choose_recipe, paired_comparison, recipe_ablation, shift_drops, summary_table

__all__ = [
    "ALL",
    "RECORDS_DIR",
    "Plan",
    "Progress",
    "RecordError",
    "RunRecord",
    "RunSpec",
    "StudyConfig",
    "StudyResults",
    "analyse",
    "choose_recipe",
    "execute_run",
    "load_records",
    "make_plan",
    "paired_comparison",
    "parse_shard",
    "plan_ablation",
    "plan_sweep",
    "read_record",
    "recipe_ablation",
    "report_from_records",
    "run_plan",
    "run_study",
    "shard_runs",
    "shift_drops",
    "summary_table",
    "training_subsets",
    "write_outputs",
]


def plan_ablation(config: StudyConfig, n_train: int) -> list[RunSpec]:
    """Stage-1 runs for a training split of ``n_train`` cases (no data needed).

    Parameters
    ----------
    config : StudyConfig
        The study's settings.
    n_train : int
        Number of training cases.

    Returns
    -------
    list of RunSpec
        The recipe-ablation runs.
    """
    return _bare_plan(config, n_train).ablation()


def plan_sweep(config: StudyConfig, n_train: int, recipe: str) -> list[RunSpec]:
    """Stage-2 runs with ``recipe`` for a training split of ``n_train`` cases (no data needed).

    Parameters
    ----------
    config : StudyConfig
        The study's settings.
    n_train : int
        Number of training cases.
    recipe : str
        The global-mask recipe of the sweep.

    Returns
    -------
    list of RunSpec
        The sweep's runs, in plan order.
    """
    return _bare_plan(config, n_train).sweep(recipe)


def _bare_plan(config: StudyConfig, n_train: int) -> Plan:
    return Plan(config, "", "", "", Split(tuple(f"t{i}" for i in range(n_train)), ("v",), ("x",)), "", {})


def check_same_data(plan: Plan, dataset: str | Path) -> Path:
    """``dataset`` as a folder holding the very cases ``plan`` ran on, else :class:`DatasetError`.

    Records store where the data lay on the machine that ran the study; on another machine the
    same cases sit elsewhere. The content fingerprint, not the path, says they are the same.

    Parameters
    ----------
    plan : Plan
        The study plan (from its records).
    dataset : str or Path
        Where the study's dataset lies on this machine.

    Returns
    -------
    Path
        The dataset's root folder.

    Raises
    ------
    DatasetError
        When cases are missing or their content differs from what the plan ran on.
    """
    ds = load_dataset(dataset)
    wanted = [*plan.split.train, *plan.split.validation, *plan.split.test]
    missing = [c for c in wanted if c not in ds.cases]
    if missing:
        raise DatasetError(
            f"{ds.root}: lacks {len(missing)} case(s) of study plan {plan.hash} "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    fp = dataset_fingerprint(ds, wanted)
    if fp != plan.dataset_fingerprint:
        raise DatasetError(f"{ds.root}: its images or labels differ from the data study plan {plan.hash} ran on "
                           f"(content fingerprint {fp[:16]}, the plan's {plan.dataset_fingerprint[:16]})")
    return ds.root


def report_from_records(
    records_dirs: Sequence[str | Path],
    out: str | Path,
    command: str | None = None,
    runs_dir: str | Path | None = None,
    dataset: str | Path | None = None,
) -> StudyResults:
    """Merge records from any number of folders (machines, shards) and write the report into ``out``.

    ``dataset``: where the study's data lie on this machine, for the overlay figures, when not
    where the records say (checked by content fingerprint).

    Parameters
    ----------
    records_dirs : sequence of str or Path
        Folders of records, or study folders holding ``records/``.
    out : str or Path
        The report folder.
    command : str, optional
        The command line recorded in the report.
    runs_dir : str or Path, optional
        Folder of the run folders (models, predictions), for the overlay figures.
    dataset : str or Path, optional
        Where the study's dataset lies on this machine.

    Returns
    -------
    StudyResults
        The analysed results.
    """

    plan, records = load_records(records_dirs)
    data_root = check_same_data(plan, dataset) if dataset is not None else None
    results = analyse(plan, records)
    with guard.writing(out, "study report", [Path(d) for d in records_dirs]):
        write_outputs(results, out, command=command, runs_dir=runs_dir, dataset=data_root)
    return results


def run_study(
    dataset: Dataset | str | Path,
    out: str | Path,
    config: StudyConfig | None = None,
    workers: int = 1,
    max_runs: int | None = None,
    command: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    shard: tuple[int, int] | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    threads: int | None = None,
    retries: int = 2,
) -> StudyResults | None:
    """Run (or continue) a study into ``out``.

    Returns the results when every run of the plan is done (and writes the report), else None
    (run the same command again to continue).

    Parameters
    ----------
    dataset : Dataset or str or Path
        The study's dataset (nnU-Net layout).
    out : str or Path
        The study folder.
    config : StudyConfig, optional
        The study's settings (default: :class:`StudyConfig`'s defaults).
    workers : int, optional
        Runs trained at once by the local backend.
    max_runs : int, optional
        Stop after this many runs (None: no limit).
    command : str, optional
        The command line recorded in the study folder and report.
    progress : bool, optional
        Show progress bars.
    echo : callable, optional
        Where status lines go.
    shard : tuple of int, optional
        ``(i, N)``: run only shard i of N.
    backend : str, optional
        ``local`` or ``ray``.
    ray_address : str, optional
        Address of an existing Ray cluster.
    threads : int, optional
        Torch threads per run (default: the CPUs split between workers).
    retries : int, optional
        Retries of a failed Ray task.

    Returns
    -------
    StudyResults or None
        The results when the study is complete, else None.
    """
    plan = make_plan(dataset, config or StudyConfig())
    state = run_plan(plan, out, workers=workers, shard=shard, max_runs=max_runs, backend=backend,
                     ray_address=ray_address, threads=threads, retries=retries, command=command,
                     progress=progress, echo=echo)
    out = Path(out)
    if not state.complete:
        why = f"waiting for {state.waiting_for}" if state.waiting_for else f"{len(state.pending)} run(s) pending"
        echo(
            f"study {plan.hash}: {len(state.executed)} run(s) executed now; {why}. "
            "Run the same command again to continue"
            + ("" if shard is None else ", or merge the shards' records with `globalmask study report`")
            + "."
        )
        return None
    _, records = load_records([out / RECORDS_DIR], plan.hash)
    results = analyse(plan, records)
    write_outputs(results, out, command=command, runs_dir=out / "runs")
    echo(f"study {plan.hash} complete: report at {out / 'report.md'}")
    return results
