"""The ``globalmask`` command: a thin layer over the Python API.

Errors in the user's input are printed as one line naming the file and the problem, with a
non-zero exit status; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import warnings
from pathlib import Path

from . import __version__, guard, validate
from .errors import GlobalmaskError, OutputError


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the usage text is one ``--help`` away), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_common_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, help="GBM recipe, e.g. threshold, threshold:-200, body, bone:300, otsu (default: bone:250, the winner of the OpenKBP recipe ablation)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="target spacing in mm, RAS order (default: median of the training split)")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None, help="CT clip window in HU, scaled to [-1, 1] (default: -1000 1000)")
    p.add_argument("--split", type=Path, default=None, help="splits.json with train/validation/test lists (default: the dataset's, else a seeded split saved in the run)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--cache", type=Path, default=None, help="folder to cache preprocessed cases across runs")


_OVERWRITE_HELP = "allow writing into a non-empty folder globalmask did not create, or into a dataset folder (never over the inputs being read)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="globalmask",
        description="Organ segmentation in CT with global binary masks (GBMs): CT-only, GBM-only and CT+GBM U-Nets.",
    )
    parser.add_argument("--version", action="version", version=f"globalmask {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("masks", help="write one global binary mask per case (same shape and affine as the CT)")
    p.add_argument("inputs", nargs="+", type=Path, help="a dataset folder (nnU-Net or images/+labels/), CT files or folders of CTs")
    p.add_argument("--recipe", default=None, help="threshold[:level] | otsu | body[:level] | bone[:level] (default: bone:250, the winner of the OpenKBP recipe ablation)")
    p.add_argument("--out", type=Path, required=True, help="output folder (<case>.nii.gz per case)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)

    p = sub.add_parser("train", help="train a U-Net in one input mode on N training cases")
    p.add_argument("dataset", type=Path)
    p.add_argument("--mode", default="ct+gbm", help="ct | gbm | ct+gbm | ct+coords (default: ct+gbm)")
    p.add_argument("--train-cases", type=int, default=None, help="number of training cases drawn (seeded) from the training split (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="run folder (model.pt, last.pt, history.csv, ...)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="training patch (default: whole cropped volumes up to --max-patch-voxels)")
    p.add_argument("--max-patch-voxels", type=int, default=96**3)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=50, help="save the resumable state (last.pt) every N steps")
    p.add_argument("--dims", type=int, choices=(2, 3), default=3, help="3D U-Net (default) or 2D slice-wise U-Net")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="U-Net channels per level (default: 16 32 64 128 256)")
    p.add_argument("--res-units", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _add_common_train_args(p)

    p = sub.add_parser("predict", help="segment CT files or folders with a trained model")
    p.add_argument("model", type=Path, help="RUN/model.pt")
    p.add_argument("inputs", nargs="+", type=Path, help="CT files (.nii.gz, .nrrd, .mha), DICOM folders or folders of CTs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--mode", default=None, help="refuse the model unless it was trained with this input mode")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)

    p = sub.add_parser("evaluate", help="Dice, centre-of-mass distance, HD95, surface distance and volumes per case and structure")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("label_dir", type=Path)
    p.add_argument("--labels", type=Path, default=None, help="dataset.json naming the labels (default: found beside LABEL_DIR)")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.csv, summary.csv, summary.json (default: PRED_DIR when globalmask wrote it)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)

    p = sub.add_parser("phantom", help="generate a synthetic CT cohort with labels (nnU-Net layout)")
    p.add_argument("--kind", choices=("headneck", "thorax"), default="headneck")
    p.add_argument("--cases", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 64), metavar=("X", "Y", "Z"))
    p.add_argument("--chambers", action="store_true", help="thorax: label the four heart chambers instead of the whole heart")
    p.add_argument("--split", default="60:20:20", help="train:validation:test proportions of the seeded splits.json (e.g. 12:3:5, the paper's heart split)")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("demo", help="phantom cohort -> train ct, gbm, ct+gbm -> evaluate -> side-by-side table")
    p.add_argument("--out", type=Path, default=Path("globalmask-demo"))
    p.add_argument("--kind", choices=("headneck", "thorax"), default="headneck")
    p.add_argument("--train-cases", type=int, default=None, help="training cases per model (default: the demo's)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default: the demo's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a tiny run (a minute) to check the installation")

    try:
        from .study import add_study_parser
    except ImportError:
        pass
    else:
        add_study_parser(sub)
    return parser


def _cmd_masks(args: argparse.Namespace) -> None:
    from .masks import Recipe, make_gbm
    from .io import case_id_from_path, check_volume_header, read_volume, write_volume
    from .dataset import load_dataset
    from .infer import collect_inputs, check_outputs
    from tqdm.auto import tqdm

    recipe = Recipe.parse(args.recipe)
    if len(args.inputs) == 1 and args.inputs[0].is_dir() and ((args.inputs[0] / "dataset.json").exists() or (args.inputs[0] / "images").is_dir()):
        ds = load_dataset(args.inputs[0])
        pairs = [(c.image, c.id) for c in ds.cases.values()]
    else:
        pairs = [(f, case_id_from_path(f)) for f in collect_inputs(args.inputs)]
    targets = [args.out / f"{cid}.nii.gz" for _, cid in pairs]
    check_outputs([p for p, _ in pairs], args.out)
    guard.check_output_dir(args.out, [*args.inputs, *(p for p, _ in pairs)], overwrite=args.overwrite)
    for src, _ in pairs:  # every input's header before any work
        check_volume_header(src)
    with guard.writing(args.out, "masks", [*args.inputs, *(p for p, _ in pairs)], overwrite=args.overwrite):
        for (src, _), dst in tqdm(list(zip(pairs, targets)), desc=f"masks {recipe.spec}", unit="case"):
            ct = read_volume(src)
            write_volume(make_gbm(ct, recipe), dst)
    print(f"wrote {len(targets)} masks ({recipe.spec}) to {args.out}")


def _cmd_train(args: argparse.Namespace) -> None:
    from .model import NetConfig
    from .preprocess import DEFAULT_WINDOW
    from .train import TrainConfig, train

    _check_train_args(args)
    net_kwargs = {"spatial_dims": args.dims, "num_res_units": args.res_units}
    if args.channels:
        net_kwargs["channels"] = tuple(args.channels)
        net_kwargs["strides"] = (2,) * (len(args.channels) - 1)
    cfg = TrainConfig(
        mode=args.mode,
        train_cases=args.train_cases,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        patch_size=tuple(args.patch_size) if args.patch_size else None,
        max_patch_voxels=args.max_patch_voxels,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        net=NetConfig(**net_kwargs),
    )
    result = train(
        args.dataset,
        args.out,
        cfg,
        recipe=args.recipe,
        spacing=args.spacing,
        window=tuple(args.window) if args.window else DEFAULT_WINDOW,
        split_file=args.split,
        cache_dir=args.cache,
        device=args.device,
        resume=args.resume,
    )
    print(
        f"trained {cfg.mode} on {len(result.train_ids)} case(s) in {result.seconds:.0f} s; "
        f"best validation Dice {result.best_val_dice:.3f} at step {result.best_step}; model: {result.model_path}"
    )


def _cmd_predict(args: argparse.Namespace) -> None:
    from .infer import Predictor, collect_inputs, resolve_device
    from .io import check_volume_header
    from .model import check_mode

    resolve_device(args.device)
    if args.mode is not None:
        check_mode(args.mode)
    files = collect_inputs(args.inputs)
    guard.check_output_dir(args.out, [*args.inputs, *files], overwrite=args.overwrite)
    predictor = Predictor(args.model, device=args.device, expect_mode=args.mode)
    for f in files:  # every input's header before any work
        check_volume_header(f)
    with guard.writing(args.out, "predict", [*args.inputs, *files], overwrite=args.overwrite):
        written = predictor.predict_files(args.inputs, args.out)
    print(f"wrote {len(written)} label map(s) to {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .dataset import load_dataset, parse_labels, read_json
    from .metrics import evaluate_folder, format_summary

    labels = None
    if args.labels is not None:
        meta = read_json(args.labels) if args.labels.is_file() else None
        if meta is None:
            labels = load_dataset(args.labels).labels
        else:
            labels = parse_labels(meta.get("labels", meta), args.labels)
    out = args.out or args.pred_dir
    if out.resolve() == args.label_dir.resolve():
        raise OutputError("metrics would be written into the reference label folder; choose another --out", out)
    into_preds = out.resolve() == args.pred_dir.resolve()
    what = "--out" if args.out is not None else "--out (default: PRED_DIR)"
    if into_preds and args.pred_dir.is_dir() and not (guard.is_globalmask_output(args.pred_dir) or args.overwrite):
        raise OutputError(f"{what}: the prediction folder was not written by globalmask; write the metrics elsewhere with --out (or pass --overwrite)", out)
    inputs = [args.label_dir] + ([] if into_preds else [args.pred_dir])
    guard.check_output_dir(out, inputs, overwrite=args.overwrite or into_preds, what=what)
    with guard.writing(out, "evaluate", inputs, overwrite=args.overwrite or into_preds):
        per_case, summary = evaluate_folder(args.pred_dir, args.label_dir, labels, out_dir=out)
    print(format_summary(summary))
    print(f"\nper-case metrics: {out / 'metrics.csv'}; summary: {out / 'summary.csv'}")


def _cmd_phantom(args: argparse.Namespace) -> None:
    from .phantom import make_phantom_dataset
    from .dataset import load_dataset, make_split, save_split

    try:
        fractions = tuple(float(f) for f in args.split.split(":"))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or not all(math.isfinite(f) for f in fractions) or min(fractions) < 0 or sum(fractions) <= 0:
        raise GlobalmaskError(f"argument --split: got {args.split!r}; expected three finite non-negative numbers train:validation:test, e.g. 60:20:20")
    validate.check_namespace(args, {"cases": validate.integer(1, 100_000), "seed": validate.integer(0, 2**32 - 1)})
    _refuse_inside_dataset(args.out.resolve().parent, args.out)
    path = make_phantom_dataset(args.out, kind=args.kind, cases=args.cases, seed=args.seed, shape=tuple(args.shape), chambers=args.chambers, progress=True)
    ds = load_dataset(path)
    split_path = path / "splits.json"
    if not split_path.exists():
        save_split(make_split(ds.cases, seed=args.seed, fractions=fractions), split_path, note=f"seeded {args.split} split (seed {args.seed})")
    print(f"wrote {len(ds)} {args.kind} phantom cases to {path} (split: {split_path})")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo
    from .infer import resolve_device

    validate.check_namespace(args, {"steps": validate.integer(1, 10**7), "train_cases": validate.integer(1, 10**6), "seed": validate.integer(0, 2**32 - 1)})
    resolve_device(args.device)
    _refuse_inside_dataset(args.out, args.out)
    run_demo(args.out, kind=args.kind, train_cases=args.train_cases, steps=args.steps, seed=args.seed, device=args.device, quick=args.quick)


def _refuse_inside_dataset(folder: Path, out: Path) -> None:
    ds = guard.enclosing_dataset(folder)
    if ds is not None:
        raise OutputError(f"--out is inside the dataset folder {ds}; datasets are read-only: choose another folder", out)


def _check_train_args(args: argparse.Namespace) -> None:
    """Every train argument in range, named as typed, before any data is read."""
    from .io import MAX_SPACING_MM
    from .train import TRAIN_RULES

    validate.check_namespace(args, {k: v for k, v in TRAIN_RULES.items() if hasattr(args, k)})
    validate.check_namespace(
        args,
        {
            "spacing": validate.sequence(validate.real(0.1, MAX_SPACING_MM), 3, "spacings in mm"),
            "window": validate.sequence(validate.real(-100_000.0, 100_000.0), 2, "HU values"),
            "channels": validate.sequence(validate.integer(1, 4096), (2, 10), "channel counts (one per U-Net level)"),
            "res_units": validate.integer(0, 16),
        },
    )
    if args.window is not None and not args.window[0] < args.window[1]:
        validate.fail(validate.flag("window"), list(args.window), "LO HI with LO < HI")
    levels = len(args.channels) if args.channels else 5
    divisor = 2 ** (levels - 1)
    if args.patch_size is not None:
        sides = args.patch_size[:2] if args.dims == 2 else args.patch_size
        if any(p % divisor for p in sides):
            validate.fail(validate.flag("patch_size"), list(args.patch_size), f"multiples of {divisor} (a U-Net with {levels} levels halves the grid {levels - 1} times)")
    if args.max_patch_voxels < divisor**args.dims:
        validate.fail(validate.flag("max_patch_voxels"), args.max_patch_voxels, f"at least {divisor**args.dims} (one {divisor}^{args.dims} patch for a U-Net with {levels} levels)")
    if args.cache is not None and guard.enclosing_dataset(args.cache) is not None:
        validate.fail(validate.flag("cache"), str(args.cache), "a folder outside the dataset (datasets are read-only)")


COMMANDS = {
    "masks": _cmd_masks,
    "train": _cmd_train,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "phantom": _cmd_phantom,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    try:
        with guard.stop_on_signals(), warnings.catch_warnings():
            warnings.showwarning = lambda message, *a, **k: print(f"globalmask {args.command}: warning: {message}", file=sys.stderr)
            handler(args)
    except GlobalmaskError as exc:
        if args.debug:
            raise
        print(f"globalmask {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # permissions, full disk, ...: the user's environment, not a bug
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"globalmask {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP via guard.stop_on_signals
        print(f"\nglobalmask {args.command}: interrupted; no partial files were left (runs can be continued with --resume)", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
