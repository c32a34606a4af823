"""Export a dataset for nnU-Net v2 with the GBM as an input channel.

nnU-Net normalises every channel by its ``channel_names`` entry: "CT" gets the dataset-wide HU
clipping and z-scoring, while "noNorm" leaves values untouched. The GBM channel is declared
"noNorm" so it stays exactly 0/1 (z-scoring a binary mask would make it a dataset-dependent pair
of floats), and it is written as uint8 on exactly the CT's grid. Labels are copied on the CT grid.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from . import guard
from .dataset import Dataset, load_dataset, load_split, select_training_cases
from .errors import GlobalmaskError, OutputError
from .io import Volume, read_json, write_json, write_volume
from .masks import Recipe, make_gbm
from .progress import bars_enabled
from .training_data import load_case

#: Input channels per mode, in nnU-Net's channel order: (name in channel_names, what is written).
MODES = {
    "ct": (("CT", "ct"),),
    "gbm": (("noNorm", "gbm"),),
    "ct+gbm": (("CT", "ct"), ("noNorm", "gbm")),
}


#: nnU-Net's file of cross-validation folds; it reads it from ``$nnUNet_preprocessed/<dataset>/``.
SPLITS_FINAL = "splits_final.json"


def export_nnunet(dataset: str | Path, out: str | Path, mode: str = "ct+gbm", recipe: str | Recipe | None = None,
                  progress: bool = True, train_cases: int | None = None, seed: int = 0) -> Path:
    """Write ``out`` as an nnU-Net v2 raw dataset: imagesTr/<case>_000k.nii.gz, labelsTr, dataset.json.

    Cases in the test list of the dataset's ``splits.json`` go to imagesTs/labelsTs so nnU-Net
    never trains on them; every other labelled case goes to imagesTr. The GBM is made with
    ``recipe`` (default: globalmask's default recipe), uint8, same shape and affine as the CT.

    With a ``splits.json``, ``splits_final.json`` holds our split as nnU-Net's fold 0 (``train``:
    the training list, or the ``train_cases`` drawn from it with ``seed`` exactly as ``globalmask
    train`` draws them; ``val``: the validation list), so ``nnUNetv2_train DATASET CONFIG 0`` trains
    on the cases our models train on. nnU-Net reads it from ``$nnUNet_preprocessed/<dataset>/``:
    copy it there after ``nnUNetv2_plan_and_preprocess``.

    Parameters
    ----------
    dataset : str or Path
        The globalmask dataset (nnU-Net or plain layout).
    out : str or Path
        The export folder; must be new or empty, and outside the dataset.
    mode : str
        'ct', 'gbm' or 'ct+gbm': the input channels written.
    recipe : str or Recipe or None
        The GBM recipe; None for the default.
    progress : bool
        Show a progress bar.
    train_cases : int or None
        Draw this many training cases for fold 0 (needs a splits.json); None for all.
    seed : int
        Seed of that draw.

    Returns
    -------
    Path
        ``out``.
    """

    if mode not in MODES:
        raise GlobalmaskError(f"unknown --mode {mode!r} for nnU-Net export; use one of {', '.join(MODES)}")
    ds = load_dataset(dataset)
    out = Path(out)
    root = Path(dataset).resolve()
    if out.resolve() == root or out.resolve().is_relative_to(root):
        raise OutputError(f"export folder is inside the dataset {root}; choose another --out", out)
    if out.exists() and any(out.iterdir()):
        raise OutputError("export folder exists and is not empty", out)
    recipe = Recipe.parse(recipe)
    test_ids, folds = _test_ids_and_folds(ds, train_cases, seed)
    with guard.staged_folder(out) as tmp:  # all or nothing: a failure leaves no half-written export
        n_train = _write_cases(tmp, ds, mode, recipe, test_ids, progress)
        if folds is not None:
            write_json(tmp / SPLITS_FINAL, folds)
        write_json(
            tmp / "dataset.json",
            {
                "channel_names": {str(k): name for k, (name, _) in enumerate(MODES[mode])},
                "labels": ds.labels,
                "numTraining": n_train,
                "file_ending": ".nii.gz",
                "name": out.name,
                "description": f"globalmask export of {ds.name}: mode {mode}, GBM recipe {recipe.spec} "
                "(channel 'noNorm': kept binary)",
            },
        )
    return out


def _test_ids_and_folds(
    ds: Dataset, train_cases: int | None, seed: int
) -> tuple[set[str], list[dict[str, list[str]]] | None]:
    """The dataset's test cases and nnU-Net's fold 0 from its ``splits.json`` (none without one)."""
    test_ids: set[str] = set()
    folds: list[dict[str, list[str]]] | None = None
    if ds.split_file is not None and ds.split_file.exists():
        test_ids = set(read_json(ds.split_file).get("test", []))
        split = load_split(ds.split_file, ds.cases.keys())
        if train_cases is not None and train_cases > len(split.train):
            raise GlobalmaskError(
                f"argument --train-cases: got {train_cases}; the training split has only {len(split.train)} case(s)"
            )
        folds = [{"train": select_training_cases(split.train, train_cases, seed), "val": list(split.validation)}]
    elif train_cases is not None:
        raise GlobalmaskError(f"argument --train-cases: {ds.root} has no splits.json to draw the training cases from")
    return test_ids, folds


def _write_cases(tmp: Path, ds: Dataset, mode: str, recipe: Recipe, test_ids: set[str], progress: bool) -> int:
    """Every case's channels and label into imagesTr/labelsTr (test or unlabelled: imagesTs/labelsTs) of ``tmp``.

    Returns the number of training cases written.
    """
    n_train = 0
    bar = tqdm(list(ds.cases.values()), desc=f"export nnU-Net {mode}", unit="case", disable=not bars_enabled(progress))
    for case in bar:
        ct, label = load_case(case, ds.labels)
        images, labels = ("imagesTs", "labelsTs") if case.id in test_ids or label is None else ("imagesTr", "labelsTr")
        n_train += images == "imagesTr"
        for k, (_, what) in enumerate(MODES[mode]):
            vol = ct if what == "ct" else make_gbm(ct, recipe)
            write_volume(vol, tmp / images / f"{case.id}_{k:04d}.nii.gz")
        if label is not None:
            write_volume(Volume(label.array, ct.affine), tmp / labels / f"{case.id}.nii.gz")
    return n_train
