"""Run records: one self-contained JSON per finished run, the only thing a report reads.

A record holds the plan's identity (hash, configuration, dataset and split fingerprints), the run
(spec, id, training settings, training case ids), how training went (steps, best step, converged,
wall time), where it ran (machine, device, library versions) and every per-case, per-structure
metric (plain and under simulated scanner shifts). Models stay in run folders; records are small
enough to commit, copy between machines and merge.
"""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..errors import GlobalmaskError
from ..io import json_safe, read_json, write_json
from .plan import Plan, RunSpec

NUMERIC_COLUMNS = ("dice", "com_mm", "hd95_mm", "msd_mm", "pred_ml", "ref_ml")

RECORD_FORMAT = "globalmask-study-record/1"
RECORDS_DIR = "records"


class RecordError(GlobalmaskError):
    """A record that cannot be read or belongs to another plan."""


@dataclass
class RunRecord:
    """The result of one run: what a report reads (one JSON file in ``records/``).

    Attributes
    ----------
    plan : dict
        :meth:`Plan.info`: hash, configuration, dataset and split fingerprints, split, labels.
    run_id : str
        The run's id (:meth:`Plan.run_id`).
    run : RunSpec
        The run.
    train_config : dict
        The training settings, recipe and preprocessing used.
    train_ids : list of str
        The training case ids.
    steps : int
        Steps trained.
    max_steps : int
        The run's maximum steps.
    best_step : int
        Step of the checkpoint kept (chosen on validation).
    best_val_dice : float or None
        Its validation Dice.
    converged : bool or None
        Whether validation reached a plateau (None: no plateau rule).
    stop_reason : str
        Why training stopped.
    train_seconds : float
        Training wall time (s), summed over every process of a resumed run.
    total_seconds : float
        Training wall time (summed over every process of a resumed run) plus this process's preparation
        and scoring wall time (s). Records written before this was fixed (December 2026) counted a
        resumed run's last process only.
    machine : dict
        Where it ran (:func:`machine_info`).
    metrics : list of dict
        One row per (subset, shift, case, structure).
    """
    plan: dict[str, Any]  # Plan.info(): hash, config, dataset and split fingerprints, split, labels
    run_id: str
    run: RunSpec
    train_config: dict[str, Any]
    train_ids: list[str]
    steps: int
    max_steps: int
    best_step: int
    best_val_dice: float | None
    converged: bool | None
    stop_reason: str
    train_seconds: float
    total_seconds: float
    machine: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plan_hash(self) -> str:
        """The hash of the plan the record belongs to.

        Returns
        -------
        str
            ``plan["plan_hash"]``.
        """
        return str(self.plan["plan_hash"])

    def to_dict(self) -> dict[str, Any]:
        """The record as stored, with its format and plan hash in front.

        Returns
        -------
        dict
            JSON-ready record.
        """
        d = asdict(self)
        return {"format": RECORD_FORMAT, "plan_hash": self.plan_hash, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        d : dict
            A stored record.

        Returns
        -------
        RunRecord
            The record.
        """
        d = {k: v for k, v in d.items() if k not in ("format", "plan_hash")}
        d["run"] = RunSpec(**d["run"])
        return cls(**d)

    def per_case(self) -> pd.DataFrame:
        """Long-format metrics with the run's keys in front (the study's per_case.csv rows).

        Returns
        -------
        pandas.DataFrame
            One row per metric row, with run id, mode, recipe, size, n_train, draw and seed.
        """
        df = pd.DataFrame(self.metrics)
        # A record stores NaN as null; a run that missed every structure has whole columns of
        # nulls, which pandas would keep as objects (and spread to every frame concatenated to it).
        for column in NUMERIC_COLUMNS:
            if column in df:
                df[column] = pd.to_numeric(df[column]).astype(float)
        keys = {
            "run_id": self.run_id,
            "mode": self.run.mode,
            "recipe": self.run.recipe,
            "size": self.run.size_label,
            "n_train": len(self.train_ids),
            "draw": self.run.draw,
            "seed": self.run.seed,
        }
        for i, (k, v) in enumerate(keys.items()):
            df.insert(i, k, v)
        return df


def machine_info(device: str, threads: int | None) -> dict[str, Any]:
    """Where a run ran: host, platform, library versions, device and threads.

    Parameters
    ----------
    device : str
        The torch device used.
    threads : int or None
        Torch threads (None: torch's current setting).

    Returns
    -------
    dict
        The record's ``machine``.
    """
    import monai


    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "globalmask": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "device": device,
        "threads": threads if threads is not None else torch.get_num_threads(),
    }


def record_path(folder: str | Path, run_id: str) -> Path:
    """The record file of run ``run_id`` in ``folder``.

    Parameters
    ----------
    folder : str or Path
        A records folder.
    run_id : str
        The run's id.

    Returns
    -------
    Path
        ``folder/<run_id>.json``.
    """
    return Path(folder) / f"{run_id}.json"


def existing_record(folder: str | Path, run_id: str) -> Path | None:
    """The record file of run ``run_id`` in ``folder`` if it exists, plain or compressed.

    Records are written as ``<run_id>.json``; a large one (per-case metrics under a variation
    suite run to megabytes) may be committed gzip-compressed as ``<run_id>.json.gz``, and a run
    with either is done.

    Parameters
    ----------
    folder : str or Path
        A records folder.
    run_id : str
        The run's id.

    Returns
    -------
    Path or None
        The record file, or None when the run has none.
    """
    plain = record_path(folder, run_id)
    packed = plain.with_name(plain.name + ".gz")
    return plain if plain.exists() else packed if packed.exists() else None


def folder_records(folder: Path) -> list[Path]:
    """The record files directly in ``folder``, plain and compressed, sorted by name.

    Parameters
    ----------
    folder : Path
        A records folder.

    Returns
    -------
    list of Path
        Its ``*.json`` and ``*.json.gz`` files.
    """
    return sorted([*folder.glob("*.json"), *folder.glob("*.json.gz")], key=lambda p: p.name)


def write_record(folder: str | Path, record: RunRecord) -> Path:
    """Atomically: a record is either complete or absent.

    Parameters
    ----------
    folder : str or Path
        The records folder.
    record : RunRecord
        The record to write.

    Returns
    -------
    Path
        The file written.
    """
    return write_json(record_path(folder, record.run_id), json_safe(record.to_dict()))


def read_record(path: str | Path) -> RunRecord:
    """Read and check one record file.

    Parameters
    ----------
    path : str or Path
        The record file.

    Returns
    -------
    RunRecord
        The record.

    Raises
    ------
    RecordError
        When the file cannot be read, is not a record, or is malformed.
    """
    path = Path(path)
    try:
        d = read_json(path)
    except GlobalmaskError as exc:
        raise RecordError(f"cannot read run record ({exc.problem})", path) from exc
    if d.get("format") != RECORD_FORMAT:
        raise RecordError(f"not a globalmask run record (format {d.get('format')!r}, expected {RECORD_FORMAT!r})", path)
    try:
        return RunRecord.from_dict(d)
    except (KeyError, TypeError) as exc:
        raise RecordError(f"malformed run record ({exc})", path) from exc


def record_files(folders: Iterable[str | Path]) -> list[Path]:
    """Record files (``*.json``, ``*.json.gz``) in each folder, or in its ``records/`` sub-folder.

    Parameters
    ----------
    folders : iterable of str or Path
        Records folders or study folders.

    Returns
    -------
    list of Path
        The record files, folder by folder, sorted by name.
    """
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise RecordError("records folder not found", folder)
        inner = folder / RECORDS_DIR
        files += folder_records(inner if inner.is_dir() else folder)
    return files


def load_records(folders: Sequence[str | Path], plan_hash: str | None = None) -> tuple[Plan, dict[str, RunRecord]]:
    """Merge the records of several folders (from any number of machines) into one set.

    Every record must belong to one plan (``plan_hash`` if given, else the first record's);
    a record of another plan is refused, naming the file. The same run found twice (e.g. copied
    into two folders) is kept once; two *different* results for one run id are refused.

    Parameters
    ----------
    folders : sequence of str or Path
        Records folders or study folders.
    plan_hash : str, optional
        The plan every record must belong to.

    Returns
    -------
    plan : Plan
        The records' plan.
    records : dict of str to RunRecord
        Run id -> record.
    """
    files = record_files(folders)
    if not files:
        raise RecordError(f"no run records found in {', '.join(str(f) for f in folders)}")
    records: dict[str, RunRecord] = {}
    sources: dict[str, Path] = {}
    plan_info: dict[str, Any] | None = None
    for path in files:
        rec = read_record(path)
        expected = plan_hash or (plan_info or rec.plan)["plan_hash"]
        if rec.plan_hash != expected:
            raise RecordError(
                f"record of another study plan (hash {rec.plan_hash}, expected {expected}: "
                "different configuration, dataset or split); "
                "merge only records of one plan",
                path,
            )
        plan_info = plan_info or rec.plan
        if rec.run_id in records:
            if _metrics_key(records[rec.run_id]) != _metrics_key(rec):
                raise RecordError(f"two different results for run {rec.run_id} (also in {sources[rec.run_id]})", path)
            continue
        records[rec.run_id], sources[rec.run_id] = rec, path
    assert plan_info is not None
    return Plan.from_info(plan_info), records


def _metrics_key(rec: RunRecord) -> str:
    return json.dumps(json_safe(rec.metrics), sort_keys=True)
