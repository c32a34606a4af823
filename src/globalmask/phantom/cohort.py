"""A phantom cohort written as an nnU-Net v2 raw dataset (dataset.json, imagesTr, labelsTr)."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from ..errors import GlobalmaskError, OutputError
from ..io import write_json, write_volume
from .case import (
    PHANTOM_VERSION,
    check_int,
    check_kind,
    check_shape,
    make_phantom_case,
    phantom_case_id,
    phantom_labels,
)
from .thorax import acquisition_stream, draw_acquisition


def make_phantom_dataset(
    out: str | Path,
    kind: str = "headneck",
    cases: int = 20,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 64, 64),
    chambers: bool = False,
    progress: bool = False,
) -> Path:
    """Write an nnU-Net v2 raw dataset folder and return its path.

    Writes ``out/dataset.json``, ``out/imagesTr/<case>_0000.nii.gz`` (int16 HU) and
    ``out/labelsTr/<case>.nii.gz`` (uint8). ``out`` must not exist or be empty; a folder already
    holding the dataset of the identical call is returned as it is (missing case files are
    regenerated), and an interrupted run of the identical call is resumed. Anything else in ``out``
    raises :class:`~globalmask.errors.OutputError`. No splits.json is written.

    Parameters
    ----------
    out : str or Path
        The dataset folder.
    kind : str, optional
        Phantom kind (see :data:`~globalmask.phantom.case.KINDS`).
    cases : int, optional
        Number of cases (>= 1).
    seed : int, optional
        The cohort's seed.
    shape : tuple of int, optional
        Grid shape of every case (voxels).
    chambers : bool, optional
        Label the heart's four chambers (thorax kinds).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    Path
        ``out``.
    """
    kind = check_kind(kind, chambers)
    shape = check_shape(shape)
    seed = check_int(seed, "seed")
    cases = check_int(cases, "cases")
    if cases < 1:
        raise GlobalmaskError(f"a phantom cohort needs at least one case, got cases={cases}")
    out = Path(out)
    block = {"kind": kind, "seed": seed, "cases": cases, "shape": list(shape), "chambers": bool(chambers)}
    marker = out / ".phantom-incomplete.json"
    _check_existing(out, block, marker)
    images, labels = out / "imagesTr", out / "labelsTr"
    todo = [
        i
        for i in range(cases)
        if not (images / f"{phantom_case_id(kind, i)}_0000.nii.gz").exists()
        or not (labels / f"{phantom_case_id(kind, i)}.nii.gz").exists()
    ]
    if not todo and (out / "dataset.json").exists():
        return out
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for folder in (images, labels):  # leftovers of a crashed atomic write
        for tmp in folder.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
    if not (out / "dataset.json").exists():
        write_json(marker, {**block, "version": PHANTOM_VERSION})
    iterator = todo
    if progress:
        iterator = tqdm(todo, desc=f"phantom {kind}", unit="case")
    for i in iterator:
        cid = phantom_case_id(kind, i)
        ct, lab = make_phantom_case(kind, i, seed, shape, chambers)
        write_volume(ct, images / f"{cid}_0000.nii.gz")
        write_volume(lab, labels / f"{cid}.nii.gz")
    write_json(out / "dataset.json", _dataset_meta(block))
    marker.unlink(missing_ok=True)
    return out


def _check_existing(out: Path, block: dict, marker: Path) -> None:
    """Refuse an ``out`` that is a file, holds another dataset, or holds anything else; accept
    a missing or empty folder, the identical call's dataset, or its interrupted run (``marker``)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError("phantom output exists and is not a folder", out)
    existing = out / "dataset.json"
    if existing.exists():
        old = _read_json_or_none(existing)
        if old is None or old.get("phantom") != block or old.get("globalmask_phantom_version") != PHANTOM_VERSION:
            raise OutputError(
                "folder already holds a different dataset (dataset.json is not from the identical phantom "
                "call); choose an empty or new folder",
                out,
            )
    elif marker.exists() and _read_json_or_none(marker) == {**block, "version": PHANTOM_VERSION}:
        pass  # an interrupted run of this very call: resume it
    elif any(out.iterdir()):
        raise OutputError("folder exists and is not empty; choose an empty or new folder for the phantom dataset", out)


def _dataset_meta(block: dict) -> dict:
    """dataset.json: the nnU-Net v2 fields plus the generating call, to recognise it later."""
    kind, seed, shape = block["kind"], block["seed"], block["shape"]
    chambers = block["chambers"]
    titles = {"headneck": "HeadNeck", "thorax": "Thorax", "thorax-varied": "ThoraxVaried"}
    title = titles[kind] + ("Chambers" if chambers else "")
    meta = {
        "name": f"GlobalmaskPhantom{title}",
        "description": (
            f"globalmask digital phantom cohort (synthetic CT with organ labels): kind={kind}, seed={seed}, "
            f"shape={'x'.join(str(s) for s in shape)}, cases={block['cases']}, chambers={chambers}. "
            "Anatomy (shape and position) is consistent across subjects; intensities vary with the simulated scanner."
        ),
        "reference": "globalmask.phantom (generated, no patient data)",
        "licence": "synthetic data, no restrictions",
        "release": f"globalmask phantom v{PHANTOM_VERSION}",
        "channel_names": {"0": "CT"},
        "labels": phantom_labels(kind, chambers),
        "numTraining": block["cases"],
        "file_ending": ".nii.gz",
        "phantom": dict(block),
        "globalmask_phantom_version": PHANTOM_VERSION,
    }
    if kind == "thorax-varied":  # which variant, and how each case was scanned
        meta["description"] += (
            " Variant thorax-varied: the thorax subjects of the same seed (identical labels) scanned with a contrast "
            "phase, tube voltage, dose and kernel drawn per case (globalmask.phantom.thorax.Acquisition); "
            "'acquisition' lists them per case."
        )
        meta["acquisition"] = {
            phantom_case_id(kind, i): draw_acquisition(acquisition_stream(seed, i)).to_dict()
            for i in range(block["cases"])
        }
    return meta


def _read_json_or_none(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when unreadable or not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
