"""The Python API: five verbs, reachable from the package root (``globalmask.train`` and so on).

Each verb is a thin layer over the machinery of its module, so the command line, a study
configuration and a Python caller share one set of rules: settings go through
:class:`~globalmask.training.TrainConfig` (:func:`~globalmask.training.check_train_settings`) and
a setting given wrongly fails before any work with the same message wherever it is given.

* :func:`train`: one model into a run folder (:func:`globalmask.training.train`).
* :func:`predict`: a label map on exactly the input's grid (:class:`globalmask.infer.Predictor`).
* :func:`evaluate`: a folder of predictions scored against references
  (:func:`globalmask.evaluation.evaluate_folder`).
* :func:`make_gbm`: the global binary mask of a CT (:func:`globalmask.masks.make_gbm`).
* :func:`run_study`: the paper's study, resumable (:func:`globalmask.study.run_study`).

``predict`` and ``make_gbm`` take a path (NIfTI, NRRD/MetaImage or a DICOM series folder), a
nibabel image, or a numpy array with ``affine=`` and return a :class:`nibabel.Nifti1Image` with
exactly the input's shape and affine. torch and monai are imported inside the verbs, so
``import globalmask`` stays light and ``globalmask --help`` fast.
"""

# The modules that load torch (training, infer, study) are imported inside the verbs that need them:
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from . import guard, masks, validate
from .dataset import Dataset, dataset_of, load_dataset, parse_labels, read_labels_file, subset_ids
from .errors import GlobalmaskError, OutputError
from .evaluation import EVALUATE_OUTPUTS, evaluate_folder, reference_cases
from .io import Volume, check_spacing, read_volume, write_volume
from .masks import Recipe

if TYPE_CHECKING:
    import pandas as pd

    from .infer import Predictor
    from .study import StudyConfig, StudyResults
    from .training import TrainConfig, TrainResult

__all__ = [
    "as_volume",
    "dataset_images",
    "evaluate",
    "make_gbm",
    "plan_text",
    "predict",
    "read_labels",
    "run_study",
    "select_references",
    "study_config",
    "subset_of",
    "to_nifti",
    "train",
    "train_config",
]

#: What ``predict`` and ``make_gbm`` accept as a CT: a path, a nibabel image or an array (with ``affine=``).
ImageLike = Any


# ----------------------------------------------------------------------------------------------
# images in and out


def as_volume(image: ImageLike, affine: Any = None) -> Volume:
    """The CT as a :class:`~globalmask.io.Volume`, whatever form it was given in.

    Parameters
    ----------
    image : str, Path, nibabel image or numpy.ndarray
        A volume file or DICOM series folder (read by :func:`globalmask.io.read_volume`), a nibabel
        image (its own affine), or a 3D array, which needs ``affine``.
    affine : array_like, optional
        The 4x4 voxel-to-world affine (RAS+, mm) of an array; refused with a path or an image,
        which carry their own.

    Returns
    -------
    Volume
        The voxels as given (no copy of an array) with the affine as float64.
    """
    if isinstance(image, (str, Path)):
        if affine is not None:
            raise ValueError("affine= is for a numpy array; a file carries its own affine")
        return read_volume(image)
    if hasattr(image, "dataobj") and hasattr(image, "affine"):  # a nibabel spatial image
        if affine is not None:
            raise ValueError("affine= is for a numpy array; a nibabel image carries its own affine")
        if image.affine is None:
            raise ValueError("the nibabel image has no affine; give its array with affine= (4x4, RAS+, mm)")
        array, affine = np.asanyarray(image.dataobj), image.affine
    elif isinstance(image, np.ndarray):
        if affine is None:
            raise ValueError(
                "an array needs affine= (its 4x4 voxel-to-world matrix, RAS+, mm): without it no distance, "
                "spacing or orientation is known"
            )
        array = image
    else:
        raise TypeError(f"expected a path, a nibabel image or a numpy array, got {type(image).__name__}")
    if array.ndim != 3:
        raise ValueError(f"expected a 3D volume, got an array of shape {tuple(array.shape)}")
    volume = Volume(array, np.asarray(affine, dtype=np.float64))
    check_spacing(volume.affine)
    return volume


def to_nifti(volume: Volume) -> nib.Nifti1Image:
    """A :class:`nibabel.Nifti1Image` of ``volume``, its header set as :func:`globalmask.io.write_volume` sets it.

    Parameters
    ----------
    volume : Volume
        Voxels and their affine.

    Returns
    -------
    nibabel.Nifti1Image
        The same array and affine; sform (and qform, where it can hold the affine) code 1, units mm.
    """
    img = nib.Nifti1Image(np.asarray(volume.array), volume.affine)  # keeps the affine exactly (float64)
    m = volume.affine[:3, :3]
    gram = m.T @ m
    orthogonal = np.allclose(gram, np.diag(np.diag(gram)), atol=1e-6 * float(np.max(np.abs(gram))))
    # the header's codes only: the image's own set_sform would round its affine to the header's float32
    img.header.set_qform(volume.affine, code=1 if orthogonal else 0)
    img.header.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def _check_out(out: str | Path | None, image: ImageLike) -> None:
    """Refuse, before any work, an ``out`` that is the input file or lies in an input DICOM folder."""
    if out is None or not isinstance(image, (str, Path)):
        return
    src, target = Path(image).resolve(), Path(out).resolve()
    if target == src or (src.is_dir() and target.is_relative_to(src)):
        raise OutputError(f"would overwrite the input {image}; choose another out=", out)


def _result(volume: Volume, out: str | Path | None) -> nib.Nifti1Image:
    if out is not None:
        write_volume(volume, out)  # atomic: a failed write leaves no partial file
    return to_nifti(volume)


# ----------------------------------------------------------------------------------------------
# the verbs


def make_gbm(image: ImageLike, recipe: Recipe | str | None = None, *, affine: Any = None,
             out: str | Path | None = None) -> nib.Nifti1Image:
    """The global binary mask of a CT: what a ``gbm`` model sees (shape and position, no intensity).

    Parameters
    ----------
    image : str, Path, nibabel image or numpy.ndarray
        The CT in Hounsfield units: a file or DICOM series folder, a nibabel image, or an array with ``affine``.
    recipe : Recipe or str, optional
        The GBM recipe, e.g. ``"bone"`` (the default), ``"threshold:-300"``, ``"body"``.
    affine : array_like, optional
        The array's 4x4 voxel-to-world affine (RAS+, mm); only with an array.
    out : str or Path, optional
        Also write the mask there (format from the suffix); never over the input.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 0/1 with exactly the input's shape and affine.
    """
    recipe = masks.Recipe.parse(recipe)  # a bad recipe fails before the CT is read
    _check_out(out, image)
    ct = as_volume(image, affine)
    return _result(masks.make_gbm(ct, recipe), out)


def predict(model: str | Path | Predictor, image: ImageLike, *, affine: Any = None, out: str | Path | None = None,
            device: str = "auto") -> nib.Nifti1Image:
    """Segment one CT with a trained model; the model makes the GBM itself with its own recipe.

    Parameters
    ----------
    model : str, Path or Predictor
        A run's ``model.pt``, or a loaded :class:`~globalmask.infer.Predictor` (load once, predict many).
    image : str, Path, nibabel image or numpy.ndarray
        The CT: a file or DICOM series folder, a nibabel image, or an array with ``affine``.
    affine : array_like, optional
        The array's 4x4 voxel-to-world affine (RAS+, mm); only with an array.
    out : str or Path, optional
        Also write the label map there (format from the suffix); never over the input.
    device : str, optional
        ``auto``, ``cpu`` or ``cuda``, when ``model`` is a path.

    Returns
    -------
    nibabel.Nifti1Image
        The label map (uint8, the model's label values) with exactly the input's shape and affine.
    """
    from .infer import Predictor

    _check_out(out, image)
    predictor = model if isinstance(model, Predictor) else Predictor(model, device=device)
    ct = as_volume(image, affine)
    return _result(predictor.predict(ct), out)


def train_config(config: TrainConfig | Mapping[str, Any] | None = None, **settings: Any) -> TrainConfig:
    """A run's :class:`~globalmask.training.TrainConfig`, every setting checked by the one set of rules.

    Parameters
    ----------
    config : TrainConfig or Mapping, optional
        A config to start from, or a mapping of settings by field name (other keys are ignored, as
        :meth:`TrainConfig.from_settings` ignores a study's ``modes`` or the command line's ``out``).
    **settings
        Fields of :class:`TrainConfig` that win over ``config`` (``mode``, ``steps``, ``lr``, ``net``
        as a NetConfig or a mapping, ...); a name that is not a field is a TypeError.

    Returns
    -------
    TrainConfig
        Checked: a wrong value fails as ``train.<setting>: got ...; expected ...``, the message the
        command line and a study give (only the name is spelled as each caller spells it).
    """
    from .training import TrainConfig

    if isinstance(config, TrainConfig):
        unknown = sorted(set(settings) - set(config.to_dict()))
        if unknown:
            raise TypeError(f"not fields of TrainConfig: {', '.join(unknown)}")
        return TrainConfig.from_settings({}, **{**vars(config), **settings}) if settings else config
    return TrainConfig.from_settings(config or {}, **settings)


def train(dataset: Any, out: str | Path, config: TrainConfig | Mapping[str, Any] | None = None, *,
          recipe: Recipe | str | None = None, spacing: Iterable[float] | None = None,
          window: Iterable[float] | str = "percentile", split: str | Path | None = None,
          cache: str | Path | None = None, device: str = "auto", resume: bool = False, keep_last: bool = True,
          progress: bool = True, **settings: Any) -> TrainResult:
    """Train one model into the run folder ``out``; every setting is checked before any data is read.

    Parameters
    ----------
    dataset : str, Path or Dataset
        A dataset folder (nnU-Net v2 raw layout or images/ + labels/), an nnU-Net name or id, or a
        loaded :class:`~globalmask.dataset.Dataset`.
    out : str or Path
        The run folder (model.pt, last.pt, history.csv, done.json).
    config : TrainConfig or Mapping, optional
        What the network learns; see :func:`train_config`.
    recipe : Recipe or str, optional
        The GBM recipe (default ``bone``), stored in the model and re-applied by :func:`predict`.
    spacing : sequence of float, optional
        Target spacing in mm, RAS order (default: the median of the training split).
    window : sequence of float or str, optional
        ``"percentile"`` (the default: nnU-Net's CT range from the training cases) or (low, high) in HU.
    split : str or Path, optional
        A splits.json (default: the dataset's own, else a seeded split saved in the run).
    cache : str or Path, optional
        A folder caching preprocessed cases across runs.
    device : str, optional
        ``auto``, ``cpu`` or ``cuda``.
    resume : bool, optional
        Continue the run in ``out`` (or start it when it is not there yet).
    keep_last : bool, optional
        Keep last.pt once the run has converged (the command line's default is to drop it).
    progress : bool, optional
        Draw a progress bar on a terminal.
    **settings
        Training settings by :class:`~globalmask.training.TrainConfig` field: ``mode``, ``steps``,
        ``train_cases``, ``seed``, ``lr``, ``patience``, ``net``, ...

    Returns
    -------
    TrainResult
        The run folder, its model.pt, the best validation Dice and step, and whether it converged.
    """
    from . import training

    cfg = train_config(config, **settings)
    data = training.DataConfig(  # spacing and window are checked (and made tuples) by DataConfig's rules
        recipe=recipe, spacing=spacing, window=window, split_file=split, cache_dir=cache,  # type: ignore[arg-type]
    )
    return training.train(dataset, out, cfg, data, device=device, resume=resume, keep_last=keep_last, progress=progress)


# ----------------------------------------------------------------------------------------------
# evaluation: which references, which labels


def read_labels(source: Mapping[str, int] | str | Path) -> dict[str, int]:
    """The structures to score, ``{name: value}``, checked as a dataset's own labels are.

    Parameters
    ----------
    source : Mapping or str or Path
        A mapping, a dataset.json (its ``labels``) or labels.json file, or a dataset folder.

    Returns
    -------
    dict[str, int]
        By value, background (0) included; duplicate or out-of-range values are refused naming the file.
    """
    if isinstance(source, Mapping):
        return parse_labels(dict(source), Path("labels"))
    path = Path(source)
    if not path.is_file():
        return load_dataset(path).labels
    return read_labels_file(path)


def subset_of(folder: str | Path, subset: str, split: str | Path | None = None,
              fallback: Path | None = None) -> tuple[Dataset, list[str], Path]:
    """The cases of one list of a dataset's split, for a dataset folder or its image or label folder.

    Parameters
    ----------
    folder : str or Path
        A dataset folder, or its imagesTr/labelsTr (images/labels) folder.
    subset : str
        ``train``, ``validation`` or ``test``.
    split : str or Path, optional
        The splits.json to take it from (default: the dataset's own, else ``fallback``).
    fallback : Path, optional
        A split to use when the dataset has none (``predict``: the model's run folder's).

    Returns
    -------
    tuple[Dataset, list[str], Path]
        The dataset, the case ids and the split file they came from.
    """
    root = dataset_of(folder)
    if root is None:
        raise GlobalmaskError(
            f"argument --subset {subset}: {folder} is not a dataset folder (dataset.json with imagesTr/labelsTr, "
            "or images/ and labels/) nor its image or label folder"
        )
    ds = load_dataset(root)
    ids, source = subset_ids(ds, subset, split, fallback)
    return ds, ids, source


def select_references(references: str | Path, subset: str | None = None,
                      split: str | Path | None = None) -> tuple[Path, list[str] | None, Path | None]:
    """The reference label folder and the cases to score, as ``evaluate`` resolves them.

    Parameters
    ----------
    references : str or Path
        A folder of reference label maps, or a dataset folder (its labelsTr or labels folder is taken).
    subset : str, optional
        Score only this list of the split: ``train``, ``validation`` or ``test``.
    split : str or Path, optional
        The splits.json ``subset`` is taken from (default: the dataset's own); only with ``subset``.

    Returns
    -------
    tuple[Path, list[str] or None, Path or None]
        The label folder, the case ids (None: every reference) and the split file they came from.
    """
    if subset is None and split is not None:
        raise GlobalmaskError(
            "argument --split: it names the split --subset takes its cases from; "
            "give --subset train|validation|test too"
        )
    cases: list[str] | None = None
    source: Path | None = None
    if subset is not None:
        _, cases, source = subset_of(references, subset, split)
    label_dir = Path(references)
    root = dataset_of(label_dir)
    if root is not None and label_dir.resolve() == root.resolve():  # the dataset folder itself: its label folder
        label_dir = root / ("labelsTr" if (root / "labelsTr").is_dir() else "labels")
    return label_dir, cases, source


def dataset_images(label_dir: str | Path) -> dict[str, Path]:
    """The CT of every case of the dataset ``label_dir`` belongs to, for QC pictures (none otherwise).

    Parameters
    ----------
    label_dir : str or Path
        A reference label folder.

    Returns
    -------
    dict[str, Path]
        Case id -> CT file; empty when the folder is not a dataset's.
    """
    root = dataset_of(label_dir)
    return {} if root is None else {cid: c.image for cid, c in load_dataset(root).cases.items()}


def evaluate(predictions: str | Path, references: str | Path, *, labels: Mapping[str, int] | str | Path | None = None,
             out: str | Path | None = None, subset: str | None = None, split: str | Path | None = None,
             qc: str | Path | None = None, overwrite: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a folder of predicted label maps against the references: Dice, CoM error, HD95, MSD, volumes.

    Parameters
    ----------
    predictions : str or Path
        Folder of predicted label maps, ``<case>.<ext>``.
    references : str or Path
        Folder of reference label maps, or a dataset folder.
    labels : Mapping or str or Path, optional
        The structures (see :func:`read_labels`; default: dataset.json beside the references).
    out : str or Path, optional
        Write metrics.csv, summary.csv and summary.json there (a folder globalmask writes; never
        the references).
    subset : str, optional
        Score only this list of the split (``references``: a dataset folder or its label folder).
    split : str or Path, optional
        The splits.json ``subset`` is taken from.
    qc : str or Path, optional
        Also write one PNG per case there.
    overwrite : bool, optional
        Allow ``out`` and ``qc`` to be non-empty folders globalmask did not create (no file is replaced).

    Returns
    -------
    tuple[pandas.DataFrame, pandas.DataFrame]
        One row per case and structure, and the summary per structure (mean and std).
    """
    structures = read_labels(labels) if labels is not None else None
    label_dir, cases, _ = select_references(references, subset, split)
    if out is not None and Path(out).resolve() == label_dir.resolve():
        raise OutputError("metrics would be written into the reference label folder; choose another --out", out)
    inputs = [label_dir, Path(predictions)]
    with contextlib.ExitStack() as stack:
        if out is not None:
            targets = [Path(out) / name for name in EVALUATE_OUTPUTS]
            stack.enter_context(guard.writing(out, "evaluate", inputs, overwrite=overwrite, targets=targets))
        if qc is not None:
            pngs = [Path(qc) / f"{c}.png" for c in reference_cases(label_dir, cases)]
            stack.enter_context(guard.writing(qc, "evaluate", inputs, overwrite=overwrite, targets=pngs, what="--qc"))
        images = dataset_images(label_dir) if qc is not None else {}
        return evaluate_folder(predictions, label_dir, structures, out_dir=out, cases=cases, qc_dir=qc, images=images)


# ----------------------------------------------------------------------------------------------
# the study


def study_config(config: StudyConfig | Mapping[str, Any] | str | Path | None = None) -> StudyConfig:
    """A study's configuration from wherever it is given, by the rules of :class:`~globalmask.study.StudyConfig`.

    Parameters
    ----------
    config : StudyConfig, Mapping, str or Path, optional
        A config, a mapping of its settings, or a study.yaml (default: the paper's study).

    Returns
    -------
    StudyConfig
        Checked: unknown settings and out-of-range values are refused naming the setting.
    """
    from .study import StudyConfig

    if config is None:
        return StudyConfig()
    if isinstance(config, StudyConfig):
        return config
    if isinstance(config, (str, Path)):
        return StudyConfig.from_yaml(config)
    validate.check_keys(config, [f.name for f in fields(StudyConfig)], "study settings")
    return StudyConfig(**dict(config))


def run_study(dataset: Any, out: str | Path | None = None,
              config: StudyConfig | Mapping[str, Any] | str | Path | None = None, *, workers: int = 1,
              threads: int | None = None, shard: str | tuple[int, int] | None = None,
              max_runs: int | None = None, device: str | None = None, backend: str = "local",
              ray_address: str | None = None, retries: int = 2, command: str | None = None,
              progress: bool = True) -> StudyResults | None:
    """Run (or continue) the paper's study: every run writes one record; a finished plan writes the report.

    Parameters
    ----------
    dataset : str, Path or Dataset
        The study's dataset.
    out : str or Path, optional
        The study folder (default: ``study-<dataset folder name>``).
    config : StudyConfig, Mapping, str or Path, optional
        The study (see :func:`study_config`).
    workers : int, optional
        Runs in parallel worker processes (local backend).
    threads : int, optional
        CPU threads per run (default: cores / workers).
    shard : str or tuple[int, int], optional
        Run only slice ``i`` of ``N`` of the plan: ``"i/N"`` or ``(i, N)``.
    max_runs : int, optional
        Execute at most this many runs now.
    device : str, optional
        ``auto``, ``cpu`` or ``cuda``, over the configuration's.
    backend : str, optional
        ``local`` or ``ray``.
    ray_address : str, optional
        An existing Ray cluster (default: a local one).
    retries : int, optional
        Ray: times a failed run is retried.
    command : str, optional
        The command line recorded in the report.
    progress : bool, optional
        Progress bars on a terminal.

    Returns
    -------
    StudyResults or None
        The results once every run of the plan (or shard) is done, else None: run again to continue.
    """
    from . import study

    cfg = study_config(config)
    if device:
        cfg = replace(cfg, device=device)
    validate.check_fields(
        {"workers": workers, "threads": threads, "max_runs": max_runs, "retries": retries},
        {"workers": validate.integer(1), "threads": validate.optional(validate.integer(1)),
         "max_runs": validate.optional(validate.integer(1)), "retries": validate.integer(0)},
        "run_study.",
    )
    shard_range = study.parse_shard(shard) if isinstance(shard, str) else shard
    if out is None:
        root = dataset.root if isinstance(dataset, Dataset) else dataset  # (a Path has a .root too: "/")
        out = Path(f"study-{Path(root).resolve().name}")
    return study.run_study(dataset, out, cfg, workers=workers, max_runs=max_runs, command=command, shard=shard_range,
                           backend=backend, ray_address=ray_address, threads=threads, retries=retries,
                           progress=progress)


def plan_text(config: StudyConfig | Mapping[str, Any] | str | Path | None, dataset: Any, *,
              seconds_per_step: float | None = None, shards: int | None = None) -> str:
    """The plan of a study as ``globalmask study plan`` prints it: its runs, ids, cost and hash.

    Parameters
    ----------
    config : StudyConfig, Mapping, str or Path or None
        The study (see :func:`study_config`).
    dataset : str, Path or Dataset
        The study's dataset.
    seconds_per_step : float, optional
        For the time estimate (default: scaled from the 2-core CPU benchmark).
    shards : int, optional
        Also show how the runs fall into this many shards.

    Returns
    -------
    str
        The lines of the plan, without a final newline.
    """
    from .study import make_plan
    from .study.plan import patch_voxels

    cfg = study_config(config)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    plan = make_plan(ds, cfg)
    ablation = plan.ablation()
    recipe = plan.fixed_recipe
    runs = plan.all_runs(recipe)
    lines = [f"plan {plan.hash}: dataset {plan.dataset_name} (fingerprint {plan.dataset_fingerprint[:16]}), "
             f"split {plan.n_train}/{len(plan.split.validation)}/{len(plan.split.test)} from {plan.split_source}"]
    lines += [f"external test set {ext.name}: {len(ext.case_ids)} cases at {ext.root} "
              f"(fingerprint {ext.fingerprint[:16]}), scored by every run after training" for ext in plan.external]
    lines.append(f"{'stage':<7} {'run id':<48} {'mode':<7} {'size':>4} {'draw':>4} {'recipe':<22} {'max steps':>9}")
    stage2 = [r for r in runs if r.name not in {a.name for a in ablation}]
    for stage, group in (("1", ablation), ("2", stage2)):
        for k, r in enumerate(group):
            shard = f"  shard {k % shards}" if shards else ""
            lines.append(f"{stage:<7} {plan.run_id(r):<48} {r.mode:<7} {r.size_label:>4} {r.draw:>4} {r.recipe:<22} "
                         f"{r.steps:>9}{shard}")
    if recipe is None:
        sweep = plan.sweep(ablation[0].recipe)  # any candidate: the sweep's size does not depend on the recipe
        shared = {r.name for r in ablation}
        stage2 = [r for r in sweep if r.name not in shared]
        lines.append(f"2       {len(stage2)} sweep runs with the recipe stage 1 chooses on the validation split "
                     "(ids known once stage 1 is done)")
    total_runs, steps = len(ablation) + len(stage2), sum(r.steps for r in ablation) + sum(r.steps for r in stage2)
    sps = seconds_per_step
    voxels = None if sps else patch_voxels(plan, ds)
    est = plan.estimate_seconds([*ablation, *stage2], sps, voxels)
    basis = (f"{sps} s/step as given" if sps
             else f"scaled from the 2-core CPU benchmark to batches of {cfg.batch_size} x {voxels} voxels")
    lines.append(f"{total_runs} runs, at most {steps} training steps; at most {est / 3600:.1f} h on one machine "
                 f"({basis}; plateau stopping usually ends runs earlier)")
    if shards:
        lines.append(f"shards: --shard I/{shards} with I in 0..{shards - 1} runs runs[k] with k % {shards} == I "
                     "within each stage")
    return "\n".join(lines)
