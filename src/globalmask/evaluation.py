"""Folder evaluation: every prediction file of a folder scored against its reference label map.

The metrics themselves are pure functions of arrays and affines in :mod:`globalmask.metrics`; this
module finds the files, pairs them by case, reads the label names, checks label values and writes
``metrics.csv``, ``summary.csv`` and ``summary.json``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import read_labels_file
from .errors import DatasetError, InputFileError
from .io import (
    Volume,
    case_id_from_path,
    json_safe,
    read_volume,
    same_geometry,
    strip_suffix,
    volume_suffix,
    write_json,
    write_text,
)
from .metrics import CASE_COLUMNS, _label_array_of, evaluate_volumes, summarize
from .progress import note
from .qc import draw_case


def _volume_files(folder: Path) -> dict[str, Path]:
    """{file stem without volume suffix: path} for every volume file (hidden/temporary files skipped)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not volume_suffix(path):
            continue
        stem = strip_suffix(path)
        if stem in out:
            raise DatasetError(f"two files share the case name {stem!r}: {out[stem].name} and {path.name}", folder)
        out[stem] = path
    return out


def _labels_from_json(label_dir: Path) -> dict[str, int] | None:
    for candidate in (label_dir / "dataset.json", label_dir.parent / "dataset.json", label_dir.parent / "labels.json"):
        if candidate.is_file():
            return read_labels_file(candidate)
    return None


def _label_values(path: Path) -> set[int]:
    volume = read_volume(path)
    array = _label_array_of(volume, "reference")
    if array.dtype == np.uint8:
        return {int(v) for v in np.flatnonzero(np.bincount(array.ravel(), minlength=1))}
    return {int(v) for v in np.unique(array)}


def _draw_qc(
    qc_dir: Path, case_id: str, labels: Mapping[str, int], ref: Volume, pred: Volume | None, image: Path | None
) -> None:
    ct = read_volume(image) if image is not None else None
    if ct is not None and not same_geometry(ct, ref):
        warnings.warn(
            f"{image}: the CT is not on the reference's grid; the QC picture of {case_id} shows the outlines alone",
            UserWarning,
            stacklevel=4,  # the caller of evaluate_folder (evaluate_folder -> _score_cases -> _draw_qc)
        )
        ct = None
    what = "prediction" if pred is not None else "no prediction (scored as empty)"
    draw_case(qc_dir / f"{case_id}.png", labels, ref, pred, ct, title=f"{case_id}: {what} against the reference")


def reference_cases(label_dir: str | Path, cases: Iterable[str] | None = None) -> list[str]:
    """The case ids :func:`evaluate_folder` scores: every reference in ``label_dir``, or ``cases``.

    Parameters
    ----------
    label_dir : str or Path
        The folder of reference label maps.
    cases : iterable of str or None
        The requested case ids (returned deduplicated, in order); None for every reference.

    Returns
    -------
    list of str
        The case ids; empty when ``label_dir`` is not a folder.
    """
    if cases is not None:
        return list(dict.fromkeys(str(c) for c in cases))
    label_dir = Path(label_dir)
    return [case_id_from_path(s) for s in _volume_files(label_dir)] if label_dir.is_dir() else []


#: The files :func:`evaluate_folder` writes into ``out_dir`` (the CLI checks them before any work).
EVALUATE_OUTPUTS = ("metrics.csv", "summary.csv", "summary.json")


def evaluate_folder(
    pred_dir: str | Path,
    label_dir: str | Path,
    labels: Mapping[str, int] | None = None,
    out_dir: str | Path | None = None,
    cases: Iterable[str] | None = None,
    qc_dir: str | Path | None = None,
    images: Mapping[str, Path] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every reference label map in ``label_dir`` against its prediction in ``pred_dir``.

    * Files of any volume format pair up by case name: a prediction ``<case>[_0000].<ext>`` belongs
      to the reference ``<case>.<ext>`` (io.case_id_from_path drops the channel tag).
    * A reference without a prediction is scored as an empty prediction -- every structure present
      in the reference is ``missed`` (Dice 0), never silently dropped -- and a warning says so.
    * A prediction without a reference is skipped with a warning.
    * ``labels`` defaults to dataset.json's labels (in ``label_dir`` or its parent, or a plain
      layout's labels.json); failing those, ``label_<k>`` for every value found in the references.
    * ``cases`` restricts the evaluation to these case ids (e.g. a test split).
    * ``qc_dir``: one PNG per case there (:func:`globalmask.qc.draw_case`), the CT of ``images``
      ({case id: CT file}) underneath where it is on the reference's grid.

    Returns (per-case long table, :func:`summarize` of it). With ``out_dir`` it also writes
    metrics.csv, summary.csv and summary.json there, each atomically.

    Parameters
    ----------
    pred_dir : str or Path
        The folder of predicted label maps.
    label_dir : str or Path
        The folder of reference label maps.
    labels : Mapping[str, int] or None
        ``{name: value}`` of the structures to score; None to read them as described above.
    out_dir : str or Path or None
        Where to write metrics.csv, summary.csv and summary.json; None writes nothing.
    cases : iterable of str or None
        The case ids to score; None for every reference.
    qc_dir : str or Path or None
        Where to draw one QC picture per case; None draws nothing.
    images : Mapping[str, Path] or None
        ``{case id: CT file}`` drawn under the outlines in the QC pictures.

    Returns
    -------
    per_case : pandas.DataFrame
        One row per case and structure, columns :data:`~globalmask.metrics.CASE_COLUMNS`.
    summary : pandas.DataFrame
        :func:`~globalmask.metrics.summarize` of ``per_case``.
    """
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    if not label_dir.is_dir():
        raise InputFileError("reference label folder not found", label_dir)
    if not pred_dir.is_dir():
        raise InputFileError("prediction folder not found", pred_dir)
    refs = _select_references(label_dir, cases)
    preds, extra = _pair_predictions(pred_dir, label_dir, refs, cases is not None)
    missing = _warn_unpaired(pred_dir, label_dir, refs, preds, extra)
    labels = _resolve_labels(labels, label_dir, refs)
    rows = _score_cases(pred_dir, refs, preds, labels, qc_dir, images)
    per_case = pd.DataFrame(rows, columns=list(CASE_COLUMNS))
    summary = summarize(per_case)
    if out_dir is not None:
        _write_outputs(Path(out_dir), pred_dir, label_dir, labels, refs, missing, extra, per_case, summary)
    return per_case, summary


def _select_references(label_dir: Path, cases: Iterable[str] | None) -> dict[str, Path]:
    """{case: reference file} of the cases to score, in order: every reference, or ``cases``."""
    refs = _volume_files(label_dir)
    if cases is not None:
        wanted = [str(c) for c in cases]
        by_id = {**{case_id_from_path(s): s for s in refs}, **{s: s for s in refs}}
        unknown = [c for c in wanted if c not in by_id]
        if unknown:
            raise DatasetError(f"requested case(s) {unknown[:5]} have no reference label file", label_dir)
        refs = {by_id[c]: refs[by_id[c]] for c in dict.fromkeys(wanted)}
    if not refs:
        raise DatasetError("holds no reference label volumes", label_dir)
    return refs


def _pair_predictions(
    pred_dir: Path, label_dir: Path, refs: dict[str, Path], subset: bool
) -> tuple[dict[str, Path], list[Path]]:
    """({case: prediction file} of the scored cases, predictions without a reference); none paired is an error.

    With ``subset`` (only some cases requested) a prediction of a real case outside the subset is
    left out silently; only one without any reference in ``label_dir`` counts as extra.
    """
    preds: dict[str, Path] = {}
    extra: list[Path] = []
    all_refs = _volume_files(label_dir) if subset else refs
    for stem, path in _volume_files(pred_dir).items():
        key = stem if stem in all_refs else case_id_from_path(stem)
        if key not in all_refs:
            extra.append(path)
            continue
        if key not in refs:
            continue  # a real case outside the requested subset
        if key in preds:
            raise DatasetError(f"two predictions for case {key!r}: {preds[key].name} and {path.name}", pred_dir)
        preds[key] = path
    if not preds:
        found = _volume_files(pred_dir)
        expected = ", ".join(f"{c}.nii.gz" for c in list(refs)[:5]) + (", ..." if len(refs) > 5 else "")
        if not found:
            raise DatasetError(
                f"holds no prediction volumes; expected one per reference in {label_dir}: {expected}", pred_dir
            )
        raise DatasetError(
            f"none of its {len(found)} volume(s) ({', '.join(p.name for p in list(found.values())[:3])}, ...) "
            f"matches a reference case in {label_dir}; expected names like {expected}",
            pred_dir,
        )
    return preds, extra


def _warn_unpaired(
    pred_dir: Path, label_dir: Path, refs: dict[str, Path], preds: dict[str, Path], extra: list[Path]
) -> list[str]:
    """Warn about predictions without a reference and references without a prediction; returns the latter.

    The warnings point at the caller of :func:`evaluate_folder` (``stacklevel=3``).
    """
    if extra:
        warnings.warn(
            f"{len(extra)} prediction(s) in {pred_dir} have no reference in {label_dir} and were skipped: "
            + ", ".join(p.name for p in extra[:10])
            + (" ..." if len(extra) > 10 else ""),
            UserWarning,
            stacklevel=3,
        )
    missing = [c for c in refs if c not in preds]
    if missing:
        warnings.warn(
            f"{len(missing)} reference case(s) have no prediction in {pred_dir} and are scored as empty "
            f"predictions (structures missed): {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""),
            UserWarning,
            stacklevel=3,
        )
    return missing


def _resolve_labels(labels: Mapping[str, int] | None, label_dir: Path, refs: dict[str, Path]) -> dict[str, int]:
    """The labels given, else the label JSON beside the references, else ``label_<k>`` for every value found."""
    if labels is None:
        labels = _labels_from_json(label_dir)
    if labels is None:
        values: set[int] = set()
        for path in refs.values():
            values |= _label_values(path)
        labels = {"background": 0, **{f"label_{v}": v for v in sorted(values) if v != 0}}
    return dict(labels)


def _score_cases(
    pred_dir: Path,
    refs: dict[str, Path],
    preds: dict[str, Path],
    labels: dict[str, int],
    qc_dir: str | Path | None,
    images: Mapping[str, Path] | None,
) -> list[dict[str, Any]]:
    """The per-case rows of every reference, in order (a missing prediction scored as empty), with QC pictures.

    Warnings point at the caller of :func:`evaluate_folder` (``stacklevel=3``).
    """
    rows: list[dict[str, Any]] = []
    n_found = 0  # predictions holding any structure
    for k, (case_id, ref_path) in enumerate(refs.items(), 1):
        ref = read_volume(ref_path)
        if case_id in preds:
            pred = read_volume(preds[case_id])
            n_found += bool(np.asarray(pred.array).any())
        else:
            pred = ref.with_array(np.zeros(ref.shape, dtype=np.uint8))
        case_rows = evaluate_volumes(pred, ref, labels, case_id)
        rows.extend(case_rows)
        if qc_dir is not None:
            qc_pred = pred if case_id in preds else None
            _draw_qc(Path(qc_dir), case_id, labels, ref, qc_pred, (images or {}).get(case_id))
        scores = [r["dice"] for r in case_rows if r.get("dice") is not None and np.isfinite(r["dice"])]
        mean = f"mean Dice {np.mean(scores):.3f} over {len(scores)} structure(s)" if scores else "no structure to score"
        empty = "" if case_id in preds else " (no prediction: scored as empty)"
        note(f"evaluate {k}/{len(refs)} {case_id}: {mean}" + empty)
    if not n_found:
        warnings.warn(
            f"every prediction in {pred_dir} is empty (background only): every structure is scored as missed; "
            "check that these are the model's label maps and that the model found anything",
            UserWarning,
            stacklevel=3,
        )
    return rows


def _write_outputs(
    out_dir: Path,
    pred_dir: Path,
    label_dir: Path,
    labels: dict[str, int],
    refs: dict[str, Path],
    missing: list[str],
    extra: list[Path],
    per_case: pd.DataFrame,
    summary: pd.DataFrame,
) -> None:
    """metrics.csv, summary.csv and summary.json (:data:`EVALUATE_OUTPUTS`) into ``out_dir``, each atomically."""
    metrics_csv, summary_csv, summary_json = (out_dir / name for name in EVALUATE_OUTPUTS)
    write_text(metrics_csv, per_case.to_csv(index=False))
    write_text(summary_csv, summary.to_csv(index=False))
    write_json(
        summary_json,
        {
            "prediction_dir": str(pred_dir),
            "label_dir": str(label_dir),
            "labels": labels,
            "n_cases": len(refs),
            "missing_predictions": missing,
            "ignored_predictions": [p.name for p in extra],
            "summary": json_safe(summary.to_dict(orient="records")),
        },
    )
