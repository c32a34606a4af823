"""Datasets (nnU-Net v2 raw layout or a plain folder) and fixed train/validation/test splits.

nnU-Net v2 layout::

    DATASET/dataset.json            channel_names {"0": "CT"}, labels {"background": 0, name: k}
    DATASET/imagesTr/<case>_0000.nii.gz
    DATASET/labelsTr/<case>.nii.gz
    DATASET/splits.json             optional: {"train": [...], "validation": [...], "test": [...]}

Plain folder: ``DATASET/images/<case>[_0000].<ext>`` and ``DATASET/labels/<case>.<ext>`` with an
optional ``DATASET/labels.json`` ({name: value}); without it structures are named ``label_<k>``.

A dataset is only ever read: splits made here are saved into the *run* folder, never the dataset.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError, InputFileError
from .io import VOLUME_SUFFIXES, case_id_from_path, read_json, read_volume, volume_suffix, write_json

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Case:
    """One subject: its CT file and (for training/evaluation) its label map file.

    Attributes
    ----------
    id : str
        The case id (nnU-Net style: the image name without suffix and channel tag).
    image : Path
        The CT file (or DICOM folder).
    label : Path or None
        The label map file, when the case has one.
    """

    id: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class Split:
    """A fixed partition of case ids; the test list is only ever used for final evaluation.

    Attributes
    ----------
    train, validation, test : tuple of str
        The case ids of each list.
    """

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        """The split as a JSON-ready dict (how splits.json stores it).

        Returns
        -------
        dict[str, list of str]
            ``{'train': [...], 'validation': [...], 'test': [...]}``.
        """
        return {"train": list(self.train), "validation": list(self.validation), "test": list(self.test)}

    def __getitem__(self, name: str) -> tuple[str, ...]:
        if name not in SPLIT_NAMES:
            raise KeyError(name)
        return getattr(self, name)


@dataclass
class Dataset:
    """Cases plus the label vocabulary ({name: value}, background included).

    Attributes
    ----------
    root : Path
        The dataset folder.
    name : str
        The dataset's name (dataset.json's ``name``, else the folder name).
    labels : dict[str, int]
        ``{name: value}`` of every label, background (0) included, by value.
    cases : dict[str, Case]
        The cases by id.
    split_file : Path or None
        The dataset's own splits.json, when it has one.
    meta : dict
        dataset.json's content (empty for a plain folder).
    """

    root: Path
    name: str
    labels: dict[str, int]
    cases: dict[str, Case]
    split_file: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def structures(self) -> dict[str, int]:
        """Foreground structures only.

        Returns
        -------
        dict[str, int]
            ``{name: value}`` without background.
        """
        return {k: v for k, v in self.labels.items() if v != 0}

    def __len__(self) -> int:
        return len(self.cases)

    def subset(self, ids) -> list[Case]:
        """The cases with the given ids, in that order; unknown ids are refused.

        Parameters
        ----------
        ids : iterable of str
            Case ids.

        Returns
        -------
        list of Case
            The cases.
        """
        missing = [i for i in ids if i not in self.cases]
        if missing:
            raise DatasetError(f"unknown case ids {missing[:5]}{'...' if len(missing) > 5 else ''}", self.root)
        return [self.cases[i] for i in ids]

    def load_split(self) -> Split | None:
        """The dataset's own splits.json, validated, or None when it has none.

        Returns
        -------
        Split or None
            The split checked against this dataset's case ids.
        """
        if self.split_file is None:
            return None
        return load_split(self.split_file, self.cases.keys())


# ----------------------------------------------------------------------------------------------
# loading


#: nnU-Net's dataset folder name, ``DatasetNNN_Name``, and a bare dataset id ``NNN``.
_NNUNET_NAME = re.compile(r"Dataset(\d{3})_[^/\\]+")
_NNUNET_ID = re.compile(r"\d{1,3}")


def resolve_dataset_path(value: str | Path) -> Path:
    """A dataset argument as nnU-Net users give it: a folder, ``DatasetNNN_Name`` or an id ``NNN``.

    An existing path is taken as it is. Otherwise a ``DatasetNNN_Name`` or a bare id (``501``,
    ``7``) is looked up under ``$nnUNet_raw``, as nnU-Net's own commands do; anything else is
    returned unchanged (the reader then says it is not there).

    Parameters
    ----------
    value : str or Path
        A folder, ``DatasetNNN_Name`` or a dataset id.

    Returns
    -------
    Path
        The dataset folder (possibly missing when ``value`` was an ordinary path).
    """
    path = Path(value)
    text = str(value)
    if path.exists() or not (_NNUNET_NAME.fullmatch(text) or _NNUNET_ID.fullmatch(text)):
        return path
    raw = os.environ.get("nnUNet_raw")  # noqa: SIM112  (nnU-Net's own spelling)
    if not raw:
        raise InputFileError(
            f"no such folder; to look up the nnU-Net dataset {text!r} set $nnUNet_raw to the folder of raw datasets",
            path,
        )
    raw_dir = Path(raw)
    if _NNUNET_NAME.fullmatch(text):
        if (raw_dir / text).is_dir():
            return raw_dir / text
        raise InputFileError(f"dataset {text!r} is not in $nnUNet_raw ({raw_dir})", raw_dir / text)
    found = sorted(d for d in raw_dir.glob(f"Dataset{int(text):03d}_*") if d.is_dir()) if raw_dir.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputFileError(
            f"no dataset with id {int(text):03d} (Dataset{int(text):03d}_*) in $nnUNet_raw ({raw_dir})", raw_dir
        )
    raise DatasetError(
        f"dataset id {int(text):03d} names several folders in $nnUNet_raw: {', '.join(d.name for d in found)}; give "
        "the folder",
        raw_dir,
    )


def load_dataset(root: str | Path) -> Dataset:
    """Read an nnU-Net v2 raw dataset or a plain images/labels folder (see module docstring).

    ``root`` may also be an nnU-Net dataset name or id under ``$nnUNet_raw`` (:func:`resolve_dataset_path`).

    Parameters
    ----------
    root : str or Path
        The dataset folder, or an nnU-Net dataset name or id.

    Returns
    -------
    Dataset
        Its cases, labels and split file.
    """
    root = resolve_dataset_path(root)
    if not root.exists():
        raise InputFileError("dataset folder not found", root)
    if not root.is_dir():
        raise InputFileError("expected a dataset folder (nnU-Net layout or images/ + labels/)", root)
    if (root / "dataset.json").exists():
        return _load_nnunet(root)
    if (root / "images").is_dir():
        return _load_plain(root)
    raise DatasetError(
        "not a dataset: expected dataset.json with imagesTr/ and labelsTr/ (nnU-Net v2) "
        "or images/ and labels/ subfolders",
        root,
    )


def parse_labels(labels: object, source: Path) -> dict[str, int]:
    """Validate a {name: int} label map (nnU-Net region labels, i.e. lists, are not supported).

    Parameters
    ----------
    labels : object
        The ``labels`` object as read from JSON.
    source : Path
        The file named in errors.

    Returns
    -------
    dict[str, int]
        ``{name: value}`` sorted by value, with background (0) added when absent.
    """
    if not isinstance(labels, dict) or not labels:
        raise DatasetError("'labels' must be a non-empty object {name: integer value}", source)
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise DatasetError(
                f"label {name!r} has value {value!r}; expected an integer (region labels are not supported)", source
            )
        if not 0 <= value <= 255:
            raise DatasetError(f"label {name!r} value {value} is outside 0..255", source)
        out[str(name)] = int(value)
    values = Counter(out.values())
    dup = [v for v, n in values.items() if n > 1]
    if dup:
        raise DatasetError(f"label values {dup} are declared more than once", source)
    if 0 not in out.values():
        out = {"background": 0, **out}
    return dict(sorted(out.items(), key=lambda kv: kv[1]))



def read_labels_file(path: Path) -> dict[str, int]:
    """The label map of one JSON file: a dataset.json's ``labels`` entry, or a labels.json that is the map.

    One reader for every place that takes labels from a file (``evaluate`` beside its references, the
    API's ``labels=``), so the same file gives the same map and the same errors everywhere.

    Parameters
    ----------
    path : Path
        A dataset.json (must have ``labels``), or any JSON file holding ``{"labels": {...}}`` or the map.

    Returns
    -------
    dict[str, int]
        ``{name: value}`` as :func:`parse_labels` checks and sorts it.
    """
    meta = read_json(path)
    if path.name == "dataset.json" and (not isinstance(meta, dict) or "labels" not in meta):
        raise DatasetError("dataset.json has no 'labels' entry", path)
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict):
        meta = meta["labels"]
    return parse_labels(meta, path)

def _load_nnunet(root: Path) -> Dataset:
    meta_path = root / "dataset.json"
    meta = read_json(meta_path)
    if "labels" not in meta:
        raise DatasetError("dataset.json has no 'labels' entry", meta_path)
    labels = parse_labels(meta["labels"], meta_path)
    channels = meta.get("channel_names", meta.get("modality", {"0": "CT"}))
    if not isinstance(channels, dict) or "0" not in {str(k) for k in channels}:
        raise DatasetError("'channel_names' must map '0' to the CT channel", meta_path)
    channels = {str(k): v for k, v in channels.items()}
    # nnU-Net's own rule: the name picks CT normalisation, case-insensitively
    if str(channels["0"]).strip().casefold() != "ct":
        raise DatasetError(
            f"channel 0 is named {channels['0']!r}, not 'CT': globalmask segments CT in Hounsfield units (its GBM "
            "recipes and "
            'window are HU levels); give it a CT dataset (channel_names {"0": "CT"})',
            meta_path,
        )
    if len(channels) > 1:
        others = ", ".join(f"{k}: {v}" for k, v in sorted(channels.items()) if k != "0")
        warnings.warn(
            f"{meta_path}: declares {len(channels)} input channels; globalmask reads channel 0 (CT) only and ignores "
            f"{others}",
            stacklevel=2,
        )
    ending = meta.get("file_ending", ".nii.gz")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DatasetError("missing imagesTr/ folder", root)
    cases: dict[str, Case] = {}
    for image in sorted(images_dir.iterdir()):
        if not image.name.endswith(ending) or image.name.startswith("."):
            continue
        stem = image.name[: -len(ending)]
        if not stem.endswith("_0000"):
            continue  # other channels of a multi-channel dataset: globalmask uses the CT channel only
        case_id = stem[:-5]
        label = labels_dir / f"{case_id}{ending}"
        cases[case_id] = Case(case_id, image, label if label.exists() else None)
    if not cases:
        raise DatasetError(f"imagesTr/ holds no '<case>_0000{ending}' files", images_dir)
    split_file = root / "splits.json"
    return Dataset(
        root, str(meta.get("name", root.name)), labels, cases, split_file if split_file.exists() else None, meta
    )


def _load_plain(root: Path) -> Dataset:
    images_dir, labels_dir = root / "images", root / "labels"
    cases: dict[str, Case] = {}
    label_files: dict[str, Path] = {}
    if labels_dir.is_dir():
        for f in sorted(labels_dir.iterdir()):
            if volume_suffix(f) and not f.name.startswith("."):
                label_files[case_id_from_path(f)] = f
    seen: Counter[str] = Counter()
    for f in sorted(images_dir.iterdir()):
        if f.name.startswith(".") or not (volume_suffix(f) or f.is_dir()):
            continue
        case_id = case_id_from_path(f)
        seen[case_id] += 1
        cases[case_id] = Case(case_id, f, label_files.get(case_id))
    dups = [c for c, n in seen.items() if n > 1]
    if dups:
        raise DatasetError(f"duplicate case ids {dups[:5]} (several image files map to the same case)", images_dir)
    if not cases:
        raise DatasetError(f"images/ holds no volumes ({', '.join(VOLUME_SUFFIXES)} or DICOM folders)", images_dir)
    labels_json = root / "labels.json"
    if labels_json.exists():
        labels = parse_labels(read_json(labels_json), labels_json)
    else:
        values: set[int] = set()
        for case in cases.values():
            if case.label is not None:
                values |= {int(v) for v in np.unique(np.asarray(read_volume(case.label).array))}
        labels = {"background": 0, **{f"label_{v}": v for v in sorted(values) if v != 0}}
    split_file = root / "splits.json"
    return Dataset(root, root.name, labels, cases, split_file if split_file.exists() else None)


# ----------------------------------------------------------------------------------------------
# splits


def validate_split(obj: object, case_ids, source: Path | None = None) -> Split:
    """Check a split mapping: known ids, no duplicates, no case in two lists, non-empty train.

    Parameters
    ----------
    obj : object
        The split as read from JSON.
    case_ids : iterable of str
        The ids a split may name.
    source : Path or None
        The file named in errors.

    Returns
    -------
    Split
        The checked split.
    """
    if not isinstance(obj, dict):
        raise DatasetError("a split must be an object with 'train', 'validation' and 'test' lists", source)
    known = set(case_ids)
    lists: dict[str, list[str]] = {}
    for name in SPLIT_NAMES:
        value = obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DatasetError(f"'{name}' must be a list of case ids", source)
        dups = [v for v, n in Counter(value).items() if n > 1]
        if dups:
            raise DatasetError(f"'{name}' lists case ids more than once: {dups[:5]}", source)
        unknown = [v for v in value if v not in known]
        if unknown:
            raise DatasetError(f"'{name}' names case ids that are not in the dataset: {unknown[:5]}", source)
        lists[name] = value
    for i, a in enumerate(SPLIT_NAMES):
        for b in SPLIT_NAMES[i + 1 :]:
            both = sorted(set(lists[a]) & set(lists[b]))
            if both:
                raise DatasetError(
                    f"cases {both[:5]} are in both '{a}' and '{b}' (a {b} case must never be trained on)", source
                )
    if not lists["train"]:
        raise DatasetError("'train' is empty", source)
    return Split(tuple(lists["train"]), tuple(lists["validation"]), tuple(lists["test"]))


def load_split(path: str | Path, case_ids) -> Split:
    """Read and check a splits.json (see :func:`validate_split`).

    Parameters
    ----------
    path : str or Path
        The split file.
    case_ids : iterable of str
        The ids the split may name.

    Returns
    -------
    Split
        The checked split.
    """
    path = Path(path)
    return validate_split(read_json(path), case_ids, path)


def make_split(case_ids, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Split:
    """Seeded random split; at least one validation and one test case when there are >= 3 cases.

    Parameters
    ----------
    case_ids : iterable of str
        The ids to split, at least 3.
    seed : int
        Random seed of the permutation.
    fractions : tuple of float
        Relative sizes of train, validation and test.

    Returns
    -------
    Split
        The split, each list sorted.
    """
    ids = sorted(case_ids)
    if len(ids) < 3:
        raise DatasetError(f"need at least 3 cases for a train/validation/test split, got {len(ids)}")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    total = sum(fractions)
    n_val = max(1, round(len(ids) * fractions[1] / total))
    n_test = max(1, round(len(ids) * fractions[2] / total))
    n_train = len(ids) - n_val - n_test
    if n_train < 1:
        raise DatasetError(f"fractions {fractions} leave no training case out of {len(ids)}")
    return Split(
        tuple(sorted(order[:n_train])),
        tuple(sorted(order[n_train : n_train + n_val])),
        tuple(sorted(order[n_train + n_val :])),
    )


def save_split(split: Split, path: str | Path, note: str | None = None) -> Path:
    """Write a split as JSON (atomically), with an optional ``note`` saying where it came from.

    Parameters
    ----------
    split : Split
        The split.
    path : str or Path
        The destination file.
    note : str or None
        Stored under ``note`` when given.

    Returns
    -------
    Path
        ``path``.
    """
    obj: dict = split.as_dict()
    if note:
        obj["note"] = note
    return write_json(path, obj)


def resolve_split(dataset: Dataset, split_file: str | Path | None = None, seed: int = 0) -> tuple[Split, str]:
    """The split to use and where it came from: an explicit file, the dataset's, or a seeded one.

    Only labelled cases can be in a split.

    Parameters
    ----------
    dataset : Dataset
        The dataset.
    split_file : str or Path or None
        An explicit split file; None for the dataset's own, else a seeded split.
    seed : int
        Seed of the split made when there is no file.

    Returns
    -------
    split : Split
        The split of the labelled cases.
    source : str
        The file it came from, or 'seeded split (seed N)'.
    """
    labelled = [c.id for c in dataset.cases.values() if c.label is not None]
    path = Path(split_file) if split_file is not None else dataset.split_file
    if path is not None:
        _check_split_labels(read_json(path), dataset, path)
        return load_split(path, labelled), str(path)
    return make_split(labelled, seed=seed), f"seeded split (seed {seed})"


def _check_split_labels(obj: dict, dataset: Dataset, source: Path) -> None:
    """A split naming a case whose label file is missing: blame the missing file, not the split."""
    for name in SPLIT_NAMES:
        ids = obj.get(name, []) if isinstance(obj, dict) else []
        for cid in ids if isinstance(ids, list) else []:
            case = dataset.cases.get(cid) if isinstance(cid, str) else None
            if case is not None and case.label is None:
                ending = (
                    dataset.meta.get("file_ending", ".nii.gz")
                    if dataset.meta
                    else volume_suffix(case.image) or ".nii.gz"
                )
                folder = "labelsTr" if dataset.meta else "labels"  # where the loader looked for it
                raise DatasetError(
                    f"case {cid!r} (in {source.name} '{name}') has an image but no label file {folder}/{cid}{ending}: "
                    "add the label map or leave the case out of the split",
                    dataset.root / folder / f"{cid}{ending}",
                )


def select_training_cases(train_ids, n: int | None, seed: int) -> list[str]:
    """Draw ``n`` training cases (seeded) from the training list; ``None`` or n >= len means all.

    The draw depends only on (sorted ids, n, seed), so every input mode trained with the same
    (n, seed) sees the same cases - the pairing the study relies on.

    Parameters
    ----------
    train_ids : iterable of str
        The training list.
    n : int or None
        How many to draw; None for all.
    seed : int
        Seed of the draw.

    Returns
    -------
    list of str
        The drawn ids, sorted.
    """
    ids = sorted(train_ids)
    if n is None or n >= len(ids):
        return ids
    if n < 1:
        raise DatasetError(f"--train-cases must be >= 1, got {n}")
    rng = np.random.default_rng([seed, n])
    return sorted(ids[i] for i in rng.choice(len(ids), size=n, replace=False))


def subset_ids(
    dataset: Dataset, subset: str, split_file: str | Path | None = None, fallback: Path | None = None
) -> tuple[list[str], Path]:
    """The case ids of one list of a split (``train``, ``validation`` or ``test``) and the file it came from.

    The split is ``split_file`` when given, else the dataset's own ``splits.json``, else
    ``fallback`` (``predict`` passes the model's run folder's ``splits.json``: the split that run
    was trained with). No split at all is an error: a subset is never made up.

    Parameters
    ----------
    dataset : Dataset
        The dataset.
    subset : str
        'train', 'validation' or 'test'.
    split_file : str or Path or None
        An explicit split file.
    fallback : Path or None
        The split file to use when neither ``split_file`` nor the dataset's own exists.

    Returns
    -------
    ids : list of str
        The list's case ids.
    path : Path
        The split file they came from.
    """
    if subset not in SPLIT_NAMES:
        raise DatasetError(f"argument --subset: got {subset!r}; expected one of {', '.join(SPLIT_NAMES)}")
    path = Path(split_file) if split_file is not None else dataset.split_file
    if path is None and fallback is not None and fallback.is_file():
        path = fallback
    if path is None:
        raise DatasetError(
            f"argument --subset {subset}: the dataset has no splits.json; give the split with --split FILE "
            "(a run folder's splits.json is the split that run was trained with)",
            dataset.root,
        )
    if not path.is_file():
        raise InputFileError("split file not found", path)
    split = load_split(path, dataset.cases.keys())
    ids = list(split[subset])
    if not ids:
        raise DatasetError(f"the split's '{subset}' list is empty: no case to take", path)
    return ids, path


def dataset_of(path: str | Path) -> Path | None:
    """The dataset folder ``path`` is, or whose image or label folder it is (nnU-Net or plain layout).

    Parameters
    ----------
    path : str or Path
        A folder.

    Returns
    -------
    Path or None
        The dataset folder, or None when ``path`` is neither a dataset nor one of its image or label folders.
    """
    def is_dataset(d: Path) -> bool:  # (a label folder with its own dataset.json beside the maps is not one)
        return ((d / "dataset.json").is_file() and (d / "imagesTr").is_dir()) or (d / "images").is_dir()

    p = Path(path)
    if p.is_dir() and is_dataset(p):
        return p
    if p.name in ("imagesTr", "labelsTr", "images", "labels") and p.parent.is_dir() and is_dataset(p.parent):
        return p.parent
    return None
