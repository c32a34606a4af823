"""Executing a plan: one run (train, then evaluate once on the test split), shards, and backends.

``execute_run`` is a pure step from (plan, run) to a :class:`RunRecord`: it trains (or resumes)
the model in ``OUT/runs/<run>/model`` and scores it. ``run_plan`` executes what is pending of a
plan, or of one ``--shard i/N`` slice of it, with one of three backends:

* ``local`` with ``workers=1``: in this process;
* ``local`` with ``workers>1``: a process pool on this machine (threads split between workers);
* ``ray``: one Ray task per run on a local Ray or an existing cluster (``pip install globalmask[ray]``),
  each task declaring its CPUs (and a GPU with ``device: cuda``), retried when it fails.

Every finished run writes ``OUT/records/<run_id>.json`` atomically and is skipped when its record
exists; an interrupted run resumes from its ``last.pt``. Records made by different shards or
machines merge into one report (``globalmask study report``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import guard
from ..dataset import Dataset, Split, load_dataset, save_split, select_training_cases
from ..errors import GlobalmaskError, OutputError
from ..infer import Predictor
from ..io import read_json, write_json, write_volume
from ..masks import Recipe
from ..metrics import evaluate_volumes
from ..preprocess import restore_volume
from ..shift import AnyVariation
from ..training import PERCENTILE, DataConfig, prepare_data, train
from ..training_data import load_case
from .config import StudyConfig
from .plan import Plan, RunSpec, shard_runs
from .records import (
    RECORDS_DIR,
    RecordError,
    RunRecord,
    existing_record,
    folder_records,
    machine_info,
    read_record,
    write_record,
)
from .stats import ablation_winner

_WORKER_CACHE: dict[str, Any] = {}


def _data_config(recipe: str, cfg: StudyConfig, out: Path) -> DataConfig:
    """One study's data settings: every run shares the study's split file and preprocessing cache.

    A ``"percentile"`` window differs from run to run (it comes from each run's training cases),
    so those runs preprocess without the on-disk cache: a few seconds a run, instead of a cache
    copy of every case per training subset.
    """
    spacing = tuple(cfg.spacing) if cfg.spacing is not None else None
    window = cfg.window if isinstance(cfg.window, str) else tuple(cfg.window)
    cache = None if isinstance(cfg.window, str) else out / "cache"
    return DataConfig(Recipe.parse(recipe), spacing, window, out / "splits.json", cache_dir=cache)


def _prepared(out: Path, dataset_root: str, plan: Plan, run: RunSpec):
    """PreparedData for a run's recipe (and window), kept in memory by the worker process.

    With a fixed window every run of a recipe shares one; a per-run ``"percentile"`` window keeps
    only the latest, so a worker's memory does not grow with the number of training subsets.
    """
    data = _data_config(run.recipe, plan.config, out)
    if data.window == PERCENTILE:
        ds = load_dataset(dataset_root)
        data = data.with_window(ds, select_training_cases(plan.split.train, run.train_cases, run.seed))
        for stale in [k for k in _WORKER_CACHE if k.startswith(f"prep:{dataset_root}:{run.recipe}:")]:
            del _WORKER_CACHE[stale]
    key = f"prep:{dataset_root}:{run.recipe}:{data.window}"
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = prepare_data(dataset_root, data, case_ids=None, progress=False)
    return _WORKER_CACHE[key]


def _varied(shift: AnyVariation, source: Dataset, case_id: str, ct, reference, seed: int, keep: bool):
    """The varied CT and reference of one case, computed once per worker when ``keep``.

    A variation is seeded per (seed, variation, case), so every model of the study meets the same
    varied scan: the test split's are kept in memory (about 10 MB a scan and level) and reused by
    every later run of this worker instead of recomputed (a metal streak costs ~8 s a scan).
    """
    key = f"varied:{source.root}:{case_id}:{shift.name}:{seed}"
    if key in _WORKER_CACHE:
        return _WORKER_CACHE[key]
    pair = shift.apply_pair(ct, reference, seed=seed, case_id=case_id)
    if keep:
        _WORKER_CACHE[key] = pair
    return pair


def _volumes(ds: Dataset, ids: Sequence[str]):
    key = f"vol:{ds.root}:" + ",".join(ids)
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = {i: load_case(ds.cases[i], ds.labels) for i in ids}
    return _WORKER_CACHE[key]


def execute_run(
    out: str | Path, dataset_root: str, plan_info: dict, run: RunSpec, threads: int | None = None, progress: bool = True
) -> RunRecord:
    """Train (or resume) one model, evaluate it once on the test split and on every external test set.

    Returns (and writes) its record. Idempotent: an existing record is returned as it is. Runs in
    worker processes and Ray tasks, so it takes only picklable arguments and re-derives everything
    else.

    Parameters
    ----------
    out : str or Path
        The study folder.
    dataset_root : str
        The study's dataset folder on this machine.
    plan_info : dict
        :meth:`Plan.info` of the study's plan.
    run : RunSpec
        The run to execute.
    threads : int, optional
        Torch threads for this run.
    progress : bool, optional
        Show training progress.

    Returns
    -------
    RunRecord
        The run's record.
    """
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    plan = Plan.from_info(plan_info)
    run_id = plan.run_id(run)
    done = existing_record(out / RECORDS_DIR, run_id)
    if done is not None:
        return read_record(done)
    if not (out / "splits.json").exists():  # a Ray task on another node: lay out the study folder there
        save_split(plan.split, out / "splits.json", note=f"split used by this study; source: {plan.split_source}")
    cfg = plan.config
    t0 = time.perf_counter()
    prepared = _prepared(out, dataset_root, plan, run)
    tcfg = cfg.train_config(run.mode, run.train_cases, run.seed, run.steps)
    run_dir = out / "runs" / run.name
    t_train = time.perf_counter()
    result = train(prepared, run_dir / "model", tcfg, device=cfg.device, resume=True, progress=progress)
    t_train = time.perf_counter() - t_train
    predictor = Predictor(result.model_path, device=cfg.device)
    # Scored only now, with the model final: the checkpoint was chosen on validation inside train().
    eval_sets = _eval_sets(plan, run, prepared.dataset, prepared.split)
    rows = _score(predictor, eval_sets, run_dir, cfg.seed)
    best = result.best_val_dice
    record = RunRecord(
        plan=plan_info,
        run_id=run_id,
        run=run,
        train_config={**tcfg.to_dict(), "recipe": prepared.recipe.spec, "preprocess": prepared.preprocess.to_dict()},
        train_ids=list(result.train_ids),
        steps=int(result.steps),
        max_steps=int(run.steps),
        best_step=int(result.best_step),
        best_val_dice=None if best is None or best != best else float(best),
        converged=result.converged,
        stop_reason=result.stop_reason,
        train_seconds=float(result.seconds),
        # a resumed run trained partly in earlier processes: its training time is result.seconds (summed over
        # them all), and this process adds only preparation and scoring
        total_seconds=float(result.seconds) + (time.perf_counter() - t0 - t_train),
        machine=machine_info(str(predictor.device), threads),
        metrics=rows,
    )
    write_record(out / RECORDS_DIR, record)
    return record


#: What a finished run is scored on: (subset name, dataset, case ids, variations: None for the plain scan).
_EvalSet = tuple[str, Dataset, Sequence[str], list[AnyVariation | None]]


def _eval_sets(plan: Plan, run: RunSpec, ds: Dataset, split: Split) -> list[_EvalSet]:
    """The test split, every external test set and, for the runs the recipe choice reads, validation.

    Called once the model is final: external test sets are read here and in :func:`_score` for the
    first time, and nothing computed from them is used by the study except to report it
    (tests/study/test_external.py spies on that).
    """
    cfg = plan.config
    shifts: list[AnyVariation | None] = [None, *cfg.shift_levels(run.size_label)]
    eval_sets: list[_EvalSet] = [("test", ds, split.test, shifts)]
    for ext in plan.external:
        eval_sets.append((ext.name, load_dataset(ext.root), ext.case_ids, shifts if cfg.shifts_on_external else [None]))
    # the recipe choice reads validation only (under the variations with the robust rule)
    if run.evaluates_validation():
        levels: list[AnyVariation | None] = [None, *cfg.shift_levels()] if cfg.recipe_rule == "robust" else [None]
        eval_sets.append(("validation", ds, split.validation, levels))
    return eval_sets


def _score(predictor: Predictor, eval_sets: list[_EvalSet], run_dir: Path, seed: int) -> list[dict]:
    """Metric rows of the final model on every case of ``eval_sets``, plain and varied; the test
    split's plain predictions are written to ``run_dir/predictions``."""
    rows: list[dict] = []
    for subset, source, ids, levels in eval_sets:
        volumes = _volumes(source, ids)
        for shift in levels:
            for case_id in ids:
                ct, reference = volumes[case_id]
                # the GBM is recomputed from the varied CT; a pose change moves the reference with it
                shifted, label = (
                    (ct, reference)
                    if shift is None
                    else _varied(shift, source, case_id, ct, reference, seed, keep=subset == "test")
                )
                if label is None:
                    raise GlobalmaskError(f"{subset} case {case_id} has no label map to score against", source.root)
                prepared_case = predictor.prepare(shifted, case_id)
                pred = restore_volume(predictor.probabilities(prepared_case), prepared_case.geometry)
                if shift is None and subset == "test":
                    write_volume(pred, run_dir / "predictions" / f"{case_id}.nii.gz")
                for row in evaluate_volumes(pred, label, source.labels, case_id):
                    rows.append({"subset": subset, "shift": "none" if shift is None else shift.name, **row})
    return rows


def _ray_execute(out: str, dataset_root: str, plan_info: dict, run: RunSpec, threads: int) -> dict:
    """Ray task body: the record travels back as a dict (the driver writes it)."""
    return execute_run(out, dataset_root, plan_info, run, threads=threads, progress=False).to_dict()


# ----------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What ``run_plan`` did: runs executed now, runs still pending (and why), and the stage reached.

    Attributes
    ----------
    executed : list of str
        Run ids executed by this call.
    pending : list of str
        Run ids still without a record.
    complete : bool
        Whether every run of the plan has a record.
    waiting_for : str or None
        What stage 2 waits for (the ablation's records), if anything.
    """

    executed: list[str]
    pending: list[str]
    complete: bool
    waiting_for: str | None = None


def check_study_folder(out: Path, plan: Plan) -> None:
    """Refuse a study folder inside the dataset, foreign to globalmask, or holding another plan.

    A new folder may hold only ``records/`` copied from elsewhere (another machine, a shard, the
    records committed with a benchmark): the study continues from them, skipping their runs,
    provided every record belongs to this plan.

    Parameters
    ----------
    out : Path
        The study folder.
    plan : Plan
        The study's plan.
    """
    check_seed_records(out / RECORDS_DIR, plan)
    guard.check_output_dir(out, [plan.dataset_root], tolerate=[RECORDS_DIR])
    cfg_path = out / "plan.json"
    if cfg_path.exists():
        previous = read_json(cfg_path)
        if previous.get("plan_hash") != plan.hash:
            raise OutputError(
                f"study folder holds another study plan ({previous.get('plan_hash')}, this one is {plan.hash}); "
                "choose another --out",
                out,
            )


def check_seed_records(folder: Path, plan: Plan) -> None:
    """Every record in ``folder`` is a record of ``plan``: a foreign one would never be skipped nor merged.

    Parameters
    ----------
    folder : Path
        The records folder.
    plan : Plan
        The study's plan.

    Raises
    ------
    RecordError
        For a record of another plan.
    """
    if not folder.is_dir():
        return
    for path in folder_records(folder):
        rec = read_record(path)
        if rec.plan_hash != plan.hash:
            raise RecordError(
                f"record of another study plan (hash {rec.plan_hash}, this study is {plan.hash}: "
                "different configuration, dataset or split); "
                "copy in only records of this plan",
                path,
            )


def claim_study_folder(out: Path, plan: Plan, command: str | None) -> None:
    """Mark the study folder as this plan's (call holding the lock, after :func:`check_study_folder`).

    Parameters
    ----------
    out : Path
        The study folder.
    plan : Plan
        The study's plan (``plan.json``, ``splits.json``).
    command : str or None
        The command line recorded in ``plan.json``.
    """
    guard.claim_output_dir(out, "study")
    cfg_path = out / "plan.json"
    if not cfg_path.exists():
        write_json(cfg_path, {**plan.info(), "command": command})
    save_split(plan.split, out / "splits.json", note=f"split used by this study; source: {plan.split_source}")


def sweep_recipe(plan: Plan, out: Path) -> tuple[str | None, str | None]:
    """(recipe of the sweep, validation winner), or (None, None) while the ablation is incomplete.

    Parameters
    ----------
    plan : Plan
        The study's plan.
    out : Path
        The study folder (its ``records/``).

    Returns
    -------
    recipe : str or None
        The sweep's recipe (the fixed one, or the ablation's winner).
    winner : str or None
        The ablation's validation winner, None until every stage-1 record exists.
    """
    ablation = plan.ablation()
    files = [existing_record(out / RECORDS_DIR, plan.run_id(r)) for r in ablation]
    if not files or None in files:  # no files: a CT-only study with a fixed recipe
        return (plan.fixed_recipe, None)
    winner = ablation_winner(plan, [read_record(f) for f in files if f is not None])
    return (plan.fixed_recipe or winner, winner)


def run_plan(
    plan: Plan,
    out: str | Path,
    *,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    max_runs: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    threads: int | None = None,
    retries: int = 2,
    command: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Progress:
    """Execute what is pending of the plan (or of shard i/N of it) into ``out``.

    Stage 1 (recipe ablation) runs first; stage 2 (the sweep) follows in the same call when its
    recipe is known: fixed in the configuration, or the ablation's validation winner once every
    stage-1 record is in ``out/records`` (other shards' records may be copied in).

    Parameters
    ----------
    plan : Plan
        The study's plan.
    out : str or Path
        The study folder.
    workers : int, optional
        Runs trained at once by the local backend.
    shard : tuple of int, optional
        ``(i, N)``: run only shard i of N.
    max_runs : int, optional
        Stop after this many runs.
    backend : str, optional
        ``local`` or ``ray``.
    ray_address : str, optional
        Address of an existing Ray cluster.
    threads : int, optional
        Torch threads per run.
    retries : int, optional
        Retries of a failed Ray task.
    command : str, optional
        The command line recorded in the study folder.
    progress : bool, optional
        Show progress bars.
    echo : callable, optional
        Where status lines go.

    Returns
    -------
    Progress
        What was executed and what is pending.
    """
    if backend not in ("local", "ray"):
        raise GlobalmaskError(f"--backend must be 'local' or 'ray', got {backend!r}")
    if workers < 1:
        raise GlobalmaskError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    check_study_folder(out, plan)
    # one writer per study folder, or per shard of it (shards of one plan may share a folder)
    lock_dir = out if shard is None else out / "shards" / f"{shard[0]}-of-{shard[1]}"
    with guard.RunLock(lock_dir, "study"), guard.stop_on_signals():
        claim_study_folder(out, plan, command)
        guard.remove_temp_files(out / RECORDS_DIR)
        return _run_plan(plan, out, workers, shard, max_runs, backend, ray_address, threads, retries, progress, echo)


def _run_plan(plan: Plan, out: Path, workers: int, shard: tuple[int, int] | None, max_runs: int | None, backend: str,
              ray_address: str | None, threads: int | None, retries: int, progress: bool,
              echo: Callable[[str], None]) -> Progress:
    dataset_root = plan.dataset_root
    ds = load_dataset(dataset_root)
    if threads is None:
        threads = 1 if backend == "ray" else max(1, (os.cpu_count() or 1) // workers)
    budget = [max_runs]
    executed: list[str] = []
    info = plan.info()

    def is_done(r: RunSpec) -> bool:
        return existing_record(out / RECORDS_DIR, plan.run_id(r)) is not None

    def execute(runs: list[RunSpec], stage: str) -> bool:
        """Run this shard's pending part of ``runs``; True when all of ``runs`` (every shard) are done.

        Parameters
        ----------
        runs : list of RunSpec
            The stage's runs.
        stage : str
            The stage's name in messages.

        Returns
        -------
        bool
            Whether every run of the stage has a record.
        """
        mine = shard_runs(runs, shard)
        pending = [r for r in mine if not is_done(r)]
        if pending and plan.config.window != PERCENTILE:  # (a per-run window is prepared by each run)
            for recipe in sorted({r.recipe for r in pending}):  # preprocess once, before workers start
                prepare_data(ds, _data_config(recipe, plan.config, out), case_ids=None, progress=progress)
        where = "" if shard is None else f" (shard {shard[0]}/{shard[1]}: {len(mine)} of them)"
        echo(
            f"study {stage}: {len(runs)} runs{where}, {len(mine) - len(pending)} already done; "
            f"{plan.n_train}/{len(plan.split.validation)}/{len(plan.split.test)} train/validation/test cases; "
            f"backend {backend}"
        )
        if budget[0] is not None:
            pending, budget[0] = pending[: budget[0]], max(0, budget[0] - len(pending))
        bar = tqdm(total=len(mine), initial=len(mine) - len([r for r in mine if not is_done(r)]), desc=f"study {stage}",
                   unit="run", disable=not progress)

        def finished(rec: RunRecord) -> None:
            executed.append(rec.run_id)
            bar.update(1)
            bar.write(_done_line(rec))

        if not pending:
            pass
        elif backend == "ray":
            _run_ray(out, dataset_root, info, pending, threads, plan.config.device, retries, ray_address, finished)
        elif workers <= 1:
            for r in pending:
                bar.set_postfix_str(r.name)
                finished(execute_run(out, dataset_root, info, r, threads=threads, progress=progress))
        else:
            _run_pool(out, dataset_root, info, pending, threads, workers, finished)
        bar.close()
        return all(is_done(r) for r in runs)

    ablation = plan.ablation()
    stage1_done = execute(ablation, "stage 1/2 (GBM recipe ablation)")
    recipe, winner = sweep_recipe(plan, out)
    if recipe is None:
        waiting = "the recipe ablation (stage 1): its records from every shard must be in " + str(out / RECORDS_DIR)
        return Progress(executed, [plan.run_id(r) for r in ablation if not is_done(r)], False, waiting)
    if winner is not None:
        write_json(out / "recipe_choice.json", {"winner_on_validation": winner, "sweep_recipe": recipe})
    runs = plan.all_runs(recipe)
    stage1_names = {r.name for r in ablation}
    stage2 = [r for r in runs if r.name not in stage1_names]  # a run shared with stage 1 belongs to stage 1's shard
    write_json(out / "subsets.json", plan.subsets(plan.sweep(recipe)))
    all_done = execute(stage2, "stage 2/2 (modes x training sizes x draws)") and stage1_done
    pending = [plan.run_id(r) for r in runs if not is_done(r)]
    return Progress(executed, pending, all_done and not pending)


def _done_line(rec: RunRecord) -> str:
    """The progress line of a finished run: its plain test Dice, steps, convergence and time."""
    conv = {True: "converged", False: "NOT converged", None: "no plateau rule"}[rec.converged]
    test = [
        m["dice"] for m in rec.metrics if m["subset"] == "test" and m["shift"] == "none" and m.get("dice") is not None
    ]
    return (
        f"  done {rec.run_id}: test Dice {sum(test) / max(1, len(test)):.3f}, "
        f"{rec.steps} steps ({conv}), {rec.total_seconds:.0f} s"
    )


def _run_pool(out: Path, dataset_root: str, info: dict, runs: list[RunSpec], threads: int, workers: int,
              finished: Callable[[RunRecord], None]) -> None:
    """Execute ``runs`` in a pool of ``workers`` spawned processes, calling ``finished`` as each
    record arrives; on any error or interrupt the runs not yet started are cancelled."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(execute_run, out, dataset_root, info, r, threads, False): r for r in runs}
        try:
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for f in done:
                    finished(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_ray(
    out: Path,
    dataset_root: str,
    info: dict,
    runs: list[RunSpec],
    threads: int,
    device: str,
    retries: int,
    address: str | None,
    finished: Callable[[RunRecord], None],
) -> None:
    try:
        import ray
    except ImportError:
        raise GlobalmaskError(
            "the Ray backend needs Ray: pip install 'globalmask[ray]' (with torch==2.13.0 in the same command)"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        gpus = 1 if device == "cuda" else 0
        task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=retries, retry_exceptions=True)(_ray_execute)
        refs = {task.remote(str(out.resolve()), dataset_root, info, r, threads): r for r in runs}
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                rec = RunRecord.from_dict(ray.get(ref))
                # a task that ran on another node: the driver keeps the record
                if existing_record(out / RECORDS_DIR, rec.run_id) is None:
                    write_record(out / RECORDS_DIR, rec)
                finished(rec)
    finally:
        if started_here:
            ray.shutdown()

