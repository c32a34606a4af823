"""The ``globalmask`` command: a thin layer over the Python API.

Errors in the user's input are printed as one line naming the file and the problem, with a
non-zero exit status; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from . import guard, validate
from ._version import __version__
from .errors import GlobalmaskError, OutputError
from .progress import bars_enabled, configure, note, unconfigure


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage text is one ``--help`` away), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None,
                   help="GBM recipe, e.g. threshold, threshold:-200, body, bone:300, otsu (default: bone:250, the "
                        "winner of the OpenKBP recipe ablation)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="target spacing in mm, RAS order (default: median of the training split)")
    p.add_argument("--window", nargs="+", metavar="LO HI | percentile", default=None,
                   help="CT clip window in HU, scaled to [-1, 1]: two numbers, or 'percentile' for the 0.5-99.5 "
                        "percentiles of the training cases' labelled voxels (nnU-Net's CT scheme; the default), e.g. "
                        "-1000 1000 for a fixed window")
    p.add_argument("--split", type=Path, default=None,
                   help="splits.json with train/validation/test lists (default: the dataset's, else a seeded split "
                        "saved in the run)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--cache", type=Path, default=None, help="folder to cache preprocessed cases across runs")


def _add_subset_args(p: argparse.ArgumentParser, subset_help: str) -> None:
    p.add_argument("--subset", choices=("train", "validation", "test"), default=None, help=subset_help)
    p.add_argument("--split", type=Path, default=None,
                   help="splits.json to take --subset from (default: the dataset's own; predict also tries the model's "
                        "run folder)")


def _subset(dataset_arg: Path, args: argparse.Namespace, fallback: Path | None = None):
    """(dataset, case ids of ``--subset``, split file) for a dataset folder or its image/label folder."""
    from .api import subset_of

    return subset_of(dataset_arg, args.subset, args.split, fallback)


_DATASET_HELP = ("dataset folder (nnU-Net v2 raw layout or images/ + labels/), or an nnU-Net DatasetNNN_Name or id NNN "
                 "under $nnUNet_raw")

_OVERWRITE_HELP = ("allow writing into a non-empty folder globalmask did not create, beside its files: none of them is "
                   "replaced, and datasets and input folders stay refused")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="globalmask",
        description="Organ segmentation in CT with global binary masks (GBMs): CT-only, GBM-only and CT+GBM U-Nets.",
    )
    parser.add_argument("--version", action="version", version=f"globalmask {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    _add_verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_masks_parser(sub)
    _add_train_parser(sub)
    _add_predict_parser(sub)
    _add_evaluate_parser(sub)
    _add_phantom_parser(sub)
    _add_demo_parser(sub)
    _add_dicom_rt_parsers(sub)
    _add_study_parsers(sub)
    _add_verbosity_to_commands(parser)
    return parser


def _add_masks_parser(sub: argparse._SubParsersAction) -> None:
    """``masks``: GBMs of a dataset or of CT files."""
    p = sub.add_parser("masks", help="write one global binary mask per case (same shape and affine as the CT)")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="a dataset folder (nnU-Net or images/+labels/), CT files or folders of CTs")
    p.add_argument("--recipe", default=None,
                   help="threshold[:level] | otsu | body[:level] | bone[:level] (default: bone:250, the winner of the "
                        "OpenKBP recipe ablation)")
    p.add_argument("--out", type=Path, required=True, help="output folder (<case>.nii.gz per case)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``train``: one model, every training lever a study has."""
    p = sub.add_parser("train", help="train a U-Net in one input mode on N training cases")
    p.add_argument("dataset", type=Path, help=_DATASET_HELP)
    p.add_argument("--mode", default="ct+gbm", help="ct | gbm | ct+gbm | ct+coords (default: ct+gbm)")
    p.add_argument("--train-cases", type=int, default=None,
                   help="number of training cases drawn (seeded) from the training split (default: all)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the training-case draw, the initial weights, patch sampling and augmentation "
                        "(default: 0)")
    p.add_argument("--out", type=Path, required=True, help="run folder (model.pt, last.pt, history.csv, ...)")
    p.add_argument("--steps", type=int, default=3000,
                   help="maximum training steps (default: 3000); training stops earlier at a validated plateau")
    p.add_argument("--patience", type=int, default=5,
                   help="stop after this many validation checks without a rise of more than --min-delta in validation "
                        "Dice (default: 5; 0: never stop early)")
    p.add_argument("--min-delta", type=float, default=0.002,
                   help="a rise of validation Dice must exceed this to count as an improvement (default: 0.002)")
    p.add_argument("--batch-size", type=int, default=2, help="patches per training step (default: 2)")
    p.add_argument("--lr", type=float, default=2e-3, help="base learning rate (default: 0.002)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay of the optimiser (default: 0.0001)")
    p.add_argument("--optimizer", default="adamw",
                   help="adamw (default) or sgd (Nesterov momentum 0.99, as nnU-Net trains)")
    p.add_argument("--schedule", default="poly",
                   help="learning rate over the maximum steps: poly (power 0.9, the default), cosine or constant")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="linear learning-rate warm-up before the schedule, fewer than --steps (default: 0)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast for training on CPUs with native bf16 (CUDA uses mixed precision anyway)")
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="training patch (default: whole cropped volumes up to --max-patch-voxels)")
    p.add_argument("--max-patch-voxels", type=int, default=96**3,
                   help="largest training patch in voxels when --patch-size is not given (default: 96^3)")
    p.add_argument("--val-every", type=int, default=100, help="validate every N steps (default: 100)")
    p.add_argument("--checkpoint-every", type=int, default=50, help="save the resumable state (last.pt) every N steps")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="3D U-Net (default) or 2D slice-wise U-Net")
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="U-Net channels per level (default: 16 32 64 128 256)")
    p.add_argument("--res-units", type=int, default=2, help="residual units per U-Net level (default: 2)")
    p.add_argument("--keep-last", action=argparse.BooleanOptionalAction, default=False,
                   help="keep last.pt, the resumable state (weights, optimiser, RNG; ~3x model.pt), once the run has "
                        "converged (default: --no-keep-last: dropped then, since a converged run is finished; a run "
                        "stopped at its maximum keeps it, to be extended)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: an interrupted one from last.pt, or one that stopped at its "
                        "maximum before a plateau with a larger --steps (every other setting must be the stored one)")
    _add_common_train_args(p)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """``predict``: label maps of CT files, folders or a split's cases."""
    p = sub.add_parser("predict", help="segment CT files or folders with a trained model")
    p.add_argument("model", type=Path, help="RUN/model.pt")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="CT files (.nii.gz, .nrrd, .mha), DICOM folders or folders of CTs (with --subset: one dataset)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the label maps (<case>.nii.gz, the input's own shape and affine)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--mode", default=None, help="refuse the model unless it was trained with this input mode")
    p.add_argument("--format", choices=("nifti", "rtstruct", "dicom-seg"), default="nifti",
                   help="also write a DICOM RT Structure Set or DICOM-SEG per DICOM input series, beside the NIfTI "
                        "label map (needs globalmask[dicom])")
    _add_subset_args(p,
                     "INPUTS is one dataset folder (or its imagesTr/images folder); segment only the cases of this "
                     "list of the split")
    p.add_argument("--qc", type=Path, default=None, metavar="DIR",
                   help="also write one PNG per case into DIR: axial, coronal and sagittal slices through each "
                        "structure's centre with the prediction outlined (and the reference, with --subset on a "
                        "labelled dataset)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``evaluate``: metrics of a prediction folder."""
    p = sub.add_parser("evaluate",
                       help="Dice, centre-of-mass distance, HD95, surface distance and volumes per case and structure")
    p.add_argument("pred_dir", type=Path, help="folder of predicted label maps (<case>.<ext>)")
    p.add_argument("label_dir", type=Path,
                   help="folder of reference label maps (e.g. DATASET/labelsTr), a dataset folder, or an nnU-Net "
                        "DatasetNNN_Name or id NNN under $nnUNet_raw")
    p.add_argument("--labels", type=Path, default=None,
                   help="dataset.json naming the labels (default: found beside LABEL_DIR)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for metrics.csv, summary.csv, summary.json "
                        "(default: PRED_DIR when globalmask wrote it)")
    _add_subset_args(p,
                     "score only the cases of this list of the split (LABEL_DIR: a dataset folder or its "
                     "labelsTr/labels folder)")
    p.add_argument("--qc", type=Path, default=None, metavar="DIR",
                   help="also write one PNG per case into DIR: axial, coronal and sagittal slices through each "
                        "structure's centre, prediction and reference outlined (the CT underneath when LABEL_DIR "
                        "belongs to a dataset)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)


def _add_phantom_parser(sub: argparse._SubParsersAction) -> None:
    """``phantom``: the synthetic cohort."""
    p = sub.add_parser("phantom", help="generate a synthetic CT cohort with labels (nnU-Net layout)")
    p.add_argument("--kind", choices=("headneck", "thorax", "thorax-varied"), default="headneck",
                   help="thorax-varied: the thorax subjects with a contrast phase, tube voltage, dose and kernel drawn "
                        "per case")
    p.add_argument("--cases", type=int, default=30, help="number of cases (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subjects, their scans and the split (default: 0)")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 64), metavar=("X", "Y", "Z"),
                   help="grid size in voxels (default: 64 64 64)")
    p.add_argument("--chambers", action="store_true",
                   help="thorax: label the four heart chambers instead of the whole heart")
    p.add_argument("--split", default="60:20:20",
                   help="train:validation:test proportions of the seeded splits.json (e.g. 12:3:5, the paper's heart "
                        "split)")
    p.add_argument("--out", type=Path, required=True,
                   help="dataset folder to create (dataset.json, imagesTr, labelsTr, splits.json)")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """``demo``: the three input modes side by side on a phantom."""
    p = sub.add_parser("demo", help="phantom cohort -> train ct, gbm, ct+gbm -> evaluate -> side-by-side table")
    p.add_argument("--out", type=Path, default=Path("globalmask-demo"),
                   help="folder for the phantom, the runs, predictions and the table (default: globalmask-demo)")
    p.add_argument("--kind", choices=("headneck", "thorax"), default="headneck",
                   help="phantom cohort (default: headneck)")
    p.add_argument("--train-cases", type=int, default=None, help="training cases per model (default: the demo's)")
    p.add_argument("--steps", type=int, default=None,
                   help="maximum training steps per model (default: the demo's; the demo stops each model at a "
                        "validated plateau)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and the training draws (default: 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--quick", action="store_true", help="a tiny run (a minute) to check the installation")



def _add_verbosity(p: argparse.ArgumentParser, default: object) -> None:
    """``-q/--quiet`` and ``-v/--verbose``, before the command or after it."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                   help="warnings and errors only: no progress bars, no progress lines")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                   help="also debug lines (e.g. every validation check even under a progress bar)")


def _add_verbosity_to_commands(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                _add_verbosity(sp, argparse.SUPPRESS)  # a flag after the command; the main parser's default otherwise
                _add_verbosity_to_commands(sp)


STUDY_ACTIONS = ("plan", "run", "report")


def _add_study_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study",
                       help="the paper's study: plan, run (sharded, pooled or on Ray) and report from run records")
    actions = p.add_subparsers(dest="study_action", metavar="ACTION")
    actions.required = True

    a = actions.add_parser("plan", help="print the plan: runs, their ids, estimated cost and the plan hash")
    a.add_argument("dataset", type=Path, help=_DATASET_HELP)
    # the form before `study plan` took its arguments as `study run` does: `study plan CONFIG DATASET`
    a.add_argument("old_dataset", type=Path, nargs="?", default=None, help=argparse.SUPPRESS)
    a.add_argument("--config", type=Path, default=None, help="study.yaml (see benchmarks/openkbp/study_converged.yaml)")
    a.add_argument("--seconds-per-step", type=float, default=None,
                   help="for the time estimate (default: scaled from the 2-core CPU benchmark)")
    a.add_argument("--shards", type=int, default=None, help="also show how the runs fall into N shards")

    a = actions.add_parser("run",
                           help="run (or continue) the study, or one shard of it; writes records/ and, once complete, "
                                "the report")
    a.add_argument("dataset", type=Path, help=_DATASET_HELP)
    a.add_argument("--config", type=Path, default=None, help="study.yaml (see benchmarks/openkbp/study_converged.yaml)")
    a.add_argument("--out", type=Path, default=None, help="study folder (default: study-<dataset folder name>)")
    a.add_argument("--shard", default=None, metavar="I/N",
                   help="run only the deterministic slice I of N of the plan (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/8")
    a.add_argument("--workers", type=int, default=1,
                   help="local backend: runs in parallel worker processes (threads are split between them)")
    a.add_argument("--threads", type=int, default=None,
                   help="CPU threads per run (default: cores / workers; Ray: 1 per task unless given)")
    a.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local (this machine) or ray (a local Ray or the cluster at --ray-address)")
    a.add_argument("--ray-address", default=None,
                   help="address of an existing Ray cluster (default: start a local one)")
    a.add_argument("--retries", type=int, default=2, help="Ray backend: times a failed run is retried")
    a.add_argument("--device", default=None, help="auto | cpu | cuda (overrides the configuration)")
    a.add_argument("--max-runs", type=int, default=None,
                   help="execute at most this many runs now; run again to continue")

    a = actions.add_parser("report",
                           help="merge run records from any number of folders (machines, shards) into one report")
    a.add_argument("records", type=Path, nargs="+",
                   help="folders of run records (a study folder or its records/ sub-folder)")
    a.add_argument("--out", type=Path, required=True,
                   help="report folder (report.md, figures, per_case.csv, summary.csv, results.json)")
    a.add_argument("--runs", type=Path, default=None,
                   help="a study folder's runs/ with predictions, for the overlay figures (optional)")
    a.add_argument("--dataset", type=Path, default=None,
                   help="where the study's dataset lies on this machine, for the overlay figures, when not where the "
                        "records say (checked by content)")


def _study_argv(argv: list[str]) -> list[str]:
    """``globalmask study DATASET ...`` (the form before plan/run/report existed) means ``study run``."""
    for i, a in enumerate(argv):
        if a == "study":
            rest = argv[i + 1 :]
            if rest and rest[0] not in STUDY_ACTIONS and rest[0] not in ("-h", "--help"):
                return [*argv[: i + 1], "run", *rest]
            break
        if not a.startswith("-"):
            break
    return argv


def _plan_paths(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(config, dataset) of ``study plan``: ``DATASET [--config CONFIG]`` as ``study run`` takes them, or the
    older ``CONFIG DATASET``."""
    if args.old_dataset is None:
        return args.config, args.dataset
    if args.config is not None:
        raise GlobalmaskError(f"study plan: give the study.yaml once: either --config {args.config} or as the first of "
                              f"two paths ({args.dataset}), not both")
    return args.dataset, args.old_dataset


def _cmd_study(args: argparse.Namespace) -> None:
    import shlex

    from . import api
    from .study import report_from_records

    typed = " ".join(shlex.quote(a) for a in sys.argv[1:])
    command = "globalmask " + typed if sys.argv[0].endswith("globalmask") else None
    if args.study_action == "plan":
        config_path, dataset = _plan_paths(args)
        print(api.plan_text(config_path, dataset, seconds_per_step=args.seconds_per_step, shards=args.shards))
        return
    if args.study_action == "report":
        results = report_from_records(args.records, args.out, command=command, runs_dir=args.runs, dataset=args.dataset)
        state = "complete" if results.complete else (f"incomplete: {results.n_pending} run(s) pending (listed in the "
                                                     "report)")
        print(f"study {results.plan.hash}: {len(results.runs)} run records merged, {state}; report at "
              f"{args.out / 'report.md'}")
        return
    config = api.study_config(args.config)
    for name in ("workers", "threads", "max_runs"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise GlobalmaskError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.retries < 0:
        raise GlobalmaskError(f"--retries must be >= 0, got {args.retries}")
    api.run_study(args.dataset, args.out, config, workers=args.workers, max_runs=args.max_runs, command=command,
                  shard=args.shard or None, device=args.device, backend=args.backend, ray_address=args.ray_address,
                  threads=args.threads, retries=args.retries, progress=_bars())


def _cmd_masks(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from .dataset import load_dataset
    from .infer import check_outputs, collect_inputs
    from .io import case_id_from_path, check_volume_header, read_volume, write_volume
    from .masks import Recipe, make_gbm

    recipe = Recipe.parse(args.recipe)
    first = args.inputs[0]
    if len(args.inputs) == 1 and first.is_dir() and ((first / "dataset.json").exists() or (first / "images").is_dir()):
        ds = load_dataset(args.inputs[0])
        pairs = [(c.image, c.id) for c in ds.cases.values()]
    else:
        pairs = [(f, case_id_from_path(f)) for f in collect_inputs(args.inputs)]
    targets = [args.out / f"{cid}.nii.gz" for _, cid in pairs]
    # scan.nii and scan.nii.gz -> one mask
    guard.check_unique_targets((src, dst) for (src, _), dst in zip(pairs, targets))
    check_outputs([p for p, _ in pairs], args.out)
    inputs = [*args.inputs, *(p for p, _ in pairs)]
    guard.check_output_dir(args.out, inputs, overwrite=args.overwrite, targets=targets)
    for src, _ in pairs:  # every input's header before any work
        check_volume_header(src)
    with guard.writing(args.out, "masks", inputs, overwrite=args.overwrite, targets=targets):
        bar = bars_enabled()
        cases = tqdm(list(zip(pairs, targets)), desc=f"masks {recipe.spec}", unit="case", disable=not bar)
        for k, ((src, _), dst) in enumerate(cases, 1):
            ct = read_volume(src)
            write_volume(make_gbm(ct, recipe), dst)
            note(f"masks {k}/{len(targets)}: wrote {dst}", bar=bar)
    print(f"wrote {len(targets)} masks ({recipe.spec}) to {args.out}")


def _cmd_train(args: argparse.Namespace) -> None:
    from . import api
    from .training import PERCENTILE

    net = _check_train_args(args)
    if args.resume and not (args.out / "config.json").is_file():
        # the Python API's resume=True also starts a run that is not there yet (the study and demo
        # rely on it); on the command line --resume means "continue", so a folder without a run is a mistake
        raise OutputError(f"argument --resume: {args.out} holds no run to continue (no config.json); drop --resume to "
                          "start one")
    cfg = api.train_config(vars(args), patience=args.patience or None, net=net)
    result = api.train(args.dataset, args.out, cfg, recipe=args.recipe, spacing=args.spacing,
                       window=args.window or PERCENTILE, split=args.split, cache=args.cache, device=args.device,
                       resume=args.resume, keep_last=args.keep_last)
    if result.already_finished:
        how = (f"converged at step {result.steps} (validation plateau)" if result.converged
               else f"stopped at its maximum of {result.max_steps} steps before a plateau (give a larger --steps with "
                    "--resume to continue it)"
               if result.converged is False else f"trained to its maximum of {result.max_steps} steps")
        validated = result.best_val_dice is not None and not math.isnan(result.best_val_dice)
        best = (f"best validation Dice {result.best_val_dice:.3f} at step {result.best_step}" if validated
                else "no validation")
        print(f"the run in {args.out} had already finished: {how}; {best}; model: {result.model_path}")
        return
    # no validation split: nothing chose a checkpoint
    if result.best_val_dice is None or math.isnan(result.best_val_dice):
        print(f"trained {cfg.mode} on {len(result.train_ids)} case(s) in {result.seconds:.0f} s; the validation split "
              f"is empty, so it trained to the maximum of {result.steps} steps and kept the final weights; model: "
              f"{result.model_path}")
        return
    print(
        f"trained {cfg.mode} on {len(result.train_ids)} case(s) in {result.seconds:.0f} s; "
        f"best validation Dice {result.best_val_dice:.3f} at step {result.best_step}; model: {result.model_path}"
    )
    if result.converged is False:
        print(f"note: stopped at the maximum of {result.max_steps} steps before validation Dice reached a plateau; "
              "raise --steps for a converged model")
    elif result.converged:
        print(f"converged: validation plateau reached at step {result.steps} of at most {result.max_steps}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from .infer import Predictor, collect_inputs, output_name, prediction_targets, resolve_device
    from .io import case_id_from_path, check_volume_header
    from .model import InputMode

    resolve_device(args.device)
    expect_mode = InputMode.parse(args.mode) if args.mode is not None else None
    if args.subset is None and args.split is not None:
        raise GlobalmaskError("argument --split: it names the split --subset takes its cases from; give --subset "
                              "train|validation|test too")
    if args.subset is not None:
        if len(args.inputs) != 1:
            raise GlobalmaskError(f"argument --subset: give one dataset folder as the input, got {len(args.inputs)} "
                                  "inputs")
        ds, ids, source = _subset(args.inputs[0], args, fallback=args.model.parent / "splits.json")
        files = [ds.cases[i].image for i in ids]
        print(f"{args.subset} split: {len(files)} case(s) from {source}")
    else:
        files = collect_inputs(args.inputs)
    fmt = getattr(args, "format", "nifti")
    targets = prediction_targets(files, args.out, fmt)
    guard.check_unique_targets(targets)
    guard.check_output_dir(args.out, [*args.inputs, *files], overwrite=args.overwrite, targets=[t for _, t in targets])
    qc_targets = [args.qc / f"{case_id_from_path(output_name(f))}.png" for f in files] if args.qc is not None else []
    if args.qc is not None:
        guard.check_unique_targets(zip(files, qc_targets))
        guard.check_output_dir(args.qc, [*args.inputs, *files], overwrite=args.overwrite, what="--qc",
                               targets=qc_targets)
    predictor = Predictor(args.model, device=args.device, expect_mode=expect_mode)
    for f in files:  # every input's header before any work
        check_volume_header(f)
    with guard.writing(args.out, "predict", [*args.inputs, *files], overwrite=args.overwrite,
                       targets=[t for _, t in targets]):
        if fmt != "nifti":
            written = _predict_dicom(predictor, args, files)
        else:
            written = predictor.predict_files(files, args.out)
            print(f"wrote {len(written)} label map(s) to {args.out}")
    if args.qc is not None:
        from .qc import draw_prediction

        references = {c.image: c.label for c in ds.cases.values()} if args.subset is not None else {}
        with guard.writing(args.qc, "predict", [*args.inputs, *files], overwrite=args.overwrite, targets=qc_targets,
                           what="--qc"):
            for src, label_map, png in zip(files, written, qc_targets):
                draw_prediction(png, predictor.spec.labels, src, label_map, references.get(src))
        print(f"pictures to check: {len(qc_targets)} PNG(s) in {args.qc}")


def _predict_dicom(predictor, args: argparse.Namespace, inputs: list[Path]) -> list[Path]:
    from .dicom_rt import check_dicom_inputs, write_prediction_objects

    check_dicom_inputs(inputs, args.format)
    written = predictor.predict_files(inputs, args.out)
    objects = write_prediction_objects(inputs, written, predictor.spec.labels, args.out, args.format)
    print(f"wrote {len(written)} label map(s) and {len(objects)} {args.format} file(s) to {args.out}")
    return written


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .api import dataset_images, read_labels, select_references
    from .evaluation import EVALUATE_OUTPUTS, evaluate_folder, reference_cases
    from .metrics import format_summary

    labels = read_labels(args.labels) if args.labels is not None else None
    args.label_dir, cases, source = select_references(args.label_dir, args.subset, args.split)
    if args.subset is not None:
        print(f"{args.subset} split: {len(cases or [])} case(s) from {source}")
    out = args.out or args.pred_dir
    if out.resolve() == args.label_dir.resolve():
        raise OutputError("metrics would be written into the reference label folder; choose another --out", out)
    into_preds = out.resolve() == args.pred_dir.resolve()
    what = "--out" if args.out is not None else "--out (default: PRED_DIR)"
    if into_preds and args.pred_dir.is_dir() and not guard.is_globalmask_output(args.pred_dir):
        # the predictions are an input: only a folder globalmask wrote takes the tables beside them
        raise OutputError(f"{what}: the prediction folder was not written by globalmask and is an input of evaluate; "
                          "write the metrics elsewhere with --out", out)
    inputs = [args.label_dir] + ([] if into_preds else [args.pred_dir])
    targets = [out / name for name in EVALUATE_OUTPUTS]
    guard.check_output_dir(out, inputs, overwrite=args.overwrite or into_preds, what=what, targets=targets)
    images: dict[str, Path] = {}
    qc_targets: list[Path] = []
    if args.qc is not None:
        qc_targets = [args.qc / f"{c}.png" for c in reference_cases(args.label_dir, cases)]
        guard.check_output_dir(args.qc, [*inputs, args.pred_dir], overwrite=args.overwrite, what="--qc",
                               targets=qc_targets)
        images = dataset_images(args.label_dir)
    with contextlib.ExitStack() as stack:
        stack.enter_context(guard.writing(out, "evaluate", inputs, overwrite=args.overwrite or into_preds,
                                          targets=targets, what=what))
        if args.qc is not None:
            stack.enter_context(guard.writing(args.qc, "evaluate", [*inputs, args.pred_dir], overwrite=args.overwrite,
                                              targets=qc_targets, what="--qc"))
        _, summary = evaluate_folder(args.pred_dir, args.label_dir, labels, out_dir=out, cases=cases, qc_dir=args.qc,
                                     images=images)
    print(format_summary(summary))
    print(f"\nper-case metrics: {out / 'metrics.csv'}; summary: {out / 'summary.csv'}")
    if args.qc is not None:
        print(f"pictures to check: {len(qc_targets)} PNG(s) in {args.qc}")


def _cmd_phantom(args: argparse.Namespace) -> None:
    from .dataset import load_dataset, make_split, save_split
    from .phantom import make_phantom_dataset
    from .phantom.case import phantom_case_id

    try:
        fractions = tuple(float(f) for f in args.split.split(":"))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or not all(math.isfinite(f) for f in fractions) or min(fractions) < 0 or sum(fractions) <= 0:
        raise GlobalmaskError(f"argument --split: got {args.split!r}; expected three finite non-negative numbers "
                              "train:validation:test, e.g. 60:20:20")
    validate.check_namespace(args, {"cases": validate.integer(1, 100_000), "seed": validate.integer(0, 2**32 - 1)})
    _refuse_inside_dataset(args.out.resolve().parent, args.out)
    try:  # the split is checked on the case ids before any case is made (it used to fail after writing them all)
        make_split([phantom_case_id(args.kind, i) for i in range(args.cases)], seed=args.seed, fractions=fractions)
    except GlobalmaskError as exc:
        raise GlobalmaskError(f"arguments --cases {args.cases} --split {args.split}: {exc.problem}") from None
    path = make_phantom_dataset(args.out, kind=args.kind, cases=args.cases, seed=args.seed, shape=tuple(args.shape),
                                chambers=args.chambers, progress=_bars())
    ds = load_dataset(path)
    split_path = path / "splits.json"
    if not split_path.exists():
        save_split(make_split(ds.cases, seed=args.seed, fractions=fractions), split_path,
                   note=f"seeded {args.split} split (seed {args.seed})")
    print(f"wrote {len(ds)} {args.kind} phantom cases to {path} (split: {split_path})")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo
    from .infer import resolve_device

    validate.check_namespace(args,
                             {"steps": validate.integer(1, 10**7), "train_cases": validate.integer(1, 10**6),
                              "seed": validate.integer(0, 2**32 - 1)})
    resolve_device(args.device)
    _refuse_inside_dataset(args.out, args.out)
    run_demo(args.out, kind=args.kind, train_cases=args.train_cases, steps=args.steps, seed=args.seed,
             device=args.device, quick=args.quick)


def _add_dicom_rt_parsers(sub) -> None:
    """`convert dicom-rt` and `export nnunet` (radiotherapy and nnU-Net interoperability)."""
    p = sub.add_parser("convert", help="convert other layouts into a globalmask/nnU-Net dataset")
    conv = p.add_subparsers(dest="convert_kind", metavar="KIND")
    conv.required = True
    q = conv.add_parser("dicom-rt", help="patient folders (CT series + RTSTRUCT) -> nnU-Net v2 raw dataset")
    q.add_argument("src", type=Path, help="folder of patient folders (or one patient folder)")
    q.add_argument("--labels", type=Path, required=True,
                   help="label map JSON/YAML: {labels: {name: value}, synonyms: {name: [ROI names]}, "
                        "priority: [names]}")
    q.add_argument("--out", type=Path, required=True,
                   help="dataset folder to create (imagesTr, labelsTr, dataset.json, conversion.csv); written whole or "
                        "not at all")
    q.add_argument("--skip-bad", action="store_true",
                   help="convert the patients that can be converted and list the others in conversion.csv with the "
                        "reason (default: any bad patient stops the conversion, nothing is written)")
    q.set_defaults(handler=_cmd_convert_dicom_rt)

    p = sub.add_parser("export", help="export a dataset for other tools")
    exp = p.add_subparsers(dest="export_kind", metavar="KIND")
    exp.required = True
    q = exp.add_parser("nnunet", help="nnU-Net v2 raw dataset with the GBM as a 'noNorm' channel")
    q.add_argument("dataset", type=Path, help=_DATASET_HELP)
    q.add_argument("--mode", default="ct+gbm", help="ct | gbm | ct+gbm (default: ct+gbm: _0000 CT, _0001 GBM)")
    q.add_argument("--recipe", default=None, help="GBM recipe (default: bone:250)")
    q.add_argument("--train-cases", type=int, default=None,
                   help="splits_final.json's fold 0 trains on N cases drawn (seeded) from the training split, as "
                        "'globalmask train --train-cases N' draws them (default: all)")
    q.add_argument("--seed", type=int, default=0, help="seed of the --train-cases draw (default: 0)")
    q.add_argument("--out", type=Path, required=True,
                   help="nnU-Net raw dataset folder to create, e.g. $nnUNet_raw/Dataset602_HNGBM; written whole or not "
                        "at all")
    q.set_defaults(handler=_cmd_export_nnunet)


def _cmd_convert_dicom_rt(args: argparse.Namespace) -> None:
    from .dicom_rt import convert_dicom_rt

    out, rows = convert_dicom_rt(args.src, args.labels, args.out, skip_bad=args.skip_bad, progress=_bars())
    n_missing = sum(1 for r in rows if r.get("missing"))
    skipped = [r["patient"] for r in rows if r["status"] != "converted"]
    note = f"; skipped {len(skipped)} ({', '.join(skipped)})" if skipped else ""
    print(f"converted {len(rows) - len(skipped)} patient(s) to {out}; {n_missing} with missing structures{note} (see "
          f"{out / 'conversion.csv'})")


def _cmd_export_nnunet(args: argparse.Namespace) -> None:
    from .export import SPLITS_FINAL, export_nnunet

    validate.check_namespace(args,
                             {"train_cases": validate.optional(validate.integer(1, 10**6)),
                              "seed": validate.integer(0, 2**32 - 1)})
    out = export_nnunet(args.dataset, args.out, mode=args.mode, recipe=args.recipe, progress=_bars(),
                        train_cases=args.train_cases, seed=args.seed)
    print(f"wrote nnU-Net v2 dataset ({args.mode}) to {out}")
    if (out / SPLITS_FINAL).is_file():
        print(f"our split is fold 0 of {out / SPLITS_FINAL}: after nnUNetv2_plan_and_preprocess copy it to "
              f"$nnUNet_preprocessed/{out.name}/ and train fold 0")


def _resolve_dataset_args(args: argparse.Namespace) -> None:
    """A dataset argument may be a folder, an nnU-Net ``DatasetNNN_Name`` or id ``NNN`` under ``$nnUNet_raw``."""
    from .dataset import resolve_dataset_path

    if isinstance(getattr(args, "dataset", None), Path):
        args.dataset = resolve_dataset_path(args.dataset)
    if args.command in ("masks", "predict") and len(args.inputs) == 1:
        args.inputs = [resolve_dataset_path(args.inputs[0])]
    if args.command == "evaluate":
        args.label_dir = resolve_dataset_path(args.label_dir)


def _bars() -> bool:
    return bars_enabled()


def _refuse_inside_dataset(folder: Path, out: Path) -> None:
    ds = guard.enclosing_dataset(folder)
    if ds is not None:
        raise OutputError(f"--out is inside the dataset folder {ds}; datasets are read-only: choose another folder",
                          out)


def _parse_window(values: list[str]) -> tuple[float, float] | str:
    """``--window LO HI`` (HU, LO < HI) or ``--window percentile``, by the rule every entry point uses."""
    from .training import check_window

    return check_window(values[0] if len(values) == 1 else values, validate.flag("window"))


def _net_config(args: argparse.Namespace):
    """The U-Net of ``--dims``, ``--channels`` and ``--res-units`` (each checked, named as typed)."""
    from .model import NetConfig

    validate.check_namespace(
        args,
        {"channels": validate.sequence(validate.integer(1, 4096), (2, 10), "channel counts (one per U-Net level)"),
         "res_units": validate.integer(0, 16)},
    )
    net: dict = {"spatial_dims": args.dims, "num_res_units": args.res_units}
    if args.channels:
        net["channels"] = tuple(args.channels)
        net["strides"] = (2,) * (len(args.channels) - 1)
    return NetConfig(**net)


def _check_train_args(args: argparse.Namespace):
    """Every train argument in range, named as typed, before any data is read; returns the U-Net.

    The training settings go through the rules of :class:`~globalmask.training.TrainConfig` and of a
    study configuration (:func:`~globalmask.training.check_train_settings`), so a setting given wrongly
    fails with the same message wherever it is given.
    """
    from .preprocess import SPACING
    from .training import TRAIN_RULES, check_train_settings

    validate.check_namespace(args, {"patience": validate.integer(0, 10**6)})  # 0: never stop early
    net = _net_config(args)
    settings = {k: getattr(args, k) for k in TRAIN_RULES if hasattr(args, k) and k != "patience"}
    check_train_settings(settings, net, validate.flag)
    validate.check_namespace(args, {"spacing": SPACING})
    if args.window is not None:
        args.window = _parse_window(args.window)
    if args.cache is not None and guard.enclosing_dataset(args.cache) is not None:
        validate.fail(validate.flag("cache"), str(args.cache), "a folder outside the dataset (datasets are read-only)")
    return net


COMMANDS = {
    "masks": _cmd_masks,
    "train": _cmd_train,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "phantom": _cmd_phantom,
    "demo": _cmd_demo,
    "study": _cmd_study,
}


def _continue_hint(args: argparse.Namespace) -> str:
    """How to pick up where an interrupted command stopped: only ``train`` needs a flag for it."""
    if args.command == "train":
        return " (continue with the same command plus --resume)"
    if args.command == "demo" or getattr(args, "study_action", None) == "run":
        return (" (run the same command again to continue: finished models are kept and the interrupted one resumes "
                "from its last checkpoint)")
    return ""


def _one_line(message: str) -> str:
    """A message quoting a library (a PyTorch state-dict dump, a YAML parser's context) on one line."""
    return " ".join(message.split())


def _print_warning(line: str) -> None:
    """One line on stderr, on a line of its own even while a progress bar is drawn."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_study_argv(list(sys.argv[1:] if argv is None else argv)))
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    configure(getattr(args, "verbosity", 0), prefix=f"globalmask {args.command}")
    try:
        with guard.stop_on_signals(), warnings.catch_warnings():
            warnings.showwarning = lambda message, *a, **k: _print_warning(f"globalmask {args.command}: warning: "
                                                                           f"{_one_line(str(message))}")
            assert handler is not None  # argparse requires a command
            _resolve_dataset_args(args)
            handler(args)
    except GlobalmaskError as exc:
        if args.debug:
            raise
        print(f"globalmask {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # permissions, full disk, ...: the user's environment, not a bug
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"globalmask {args.command}: error: {where}{_one_line(str(exc.strerror or exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP via guard.stop_on_signals
        print(f"\nglobalmask {args.command}: interrupted; no partial files were left{_continue_hint(args)}",
              file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        unconfigure()
    return 0


if __name__ == "__main__":
    sys.exit(main())
