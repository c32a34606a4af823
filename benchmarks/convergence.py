"""Time-to-plateau and plateau Dice of training recipes on real CT, chosen on the validation split.

Each candidate trains one model on the 26 OpenKBP training cases at 6 mm (the study's setting),
validates every ``--val-every`` steps on the 10 validation cases and stops at a validated plateau
(or ``--max-steps``). The test split is never read. One JSON per (candidate, mode) is written to
``benchmarks/convergence/`` as soon as the run ends, so a sweep spans sessions; ``--table``
turns them into ``benchmarks/convergence.md`` with learning curves.

    .venv/bin/python benchmarks/convergence.py ../shared/data/Dataset501_OpenKBPHeadNeck --run base --mode ct
    .venv/bin/python benchmarks/convergence.py --table

Runs resume after a crash (their run folders live under ``runs/convergence/``, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "convergence"
WORK = HERE.parent / "runs" / "convergence"

# The study's landed setting (benchmarks/openkbp/study_fixed_budget.yaml) is "base"; every other candidate
# changes one lever, so each row measures that lever alone.
BASE = dict(
    lr=2e-3,
    batch_size=2,
    optimizer="adamw",
    schedule="poly",
    warmup_steps=0,
    bf16=False,
    max_patch_voxels=458752,
    net=dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=1),
)
CANDIDATES: dict[str, dict] = {
    "base": {},
    "bf16": dict(bf16=True),
    "sgd-nesterov-lr1e-2": dict(optimizer="sgd", lr=1e-2, weight_decay=3e-5),
    "adamw-lr1e-3": dict(lr=1e-3),
    "adamw-lr4e-3-warmup": dict(lr=4e-3, warmup_steps=100),
    "cosine": dict(schedule="cosine"),
    "constant-lr": dict(schedule="constant"),
    "batch4": dict(batch_size=4),
    "net-8-128": dict(net=dict(channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2), num_res_units=1)),
    "net-32-320": dict(net=dict(channels=(32, 64, 128, 256, 320), strides=(2, 2, 2, 2), num_res_units=1)),
    "window-nnunet": dict(window="percentile"),  # foreground 0.5-99.5 percentile clip (nnU-Net's CT scheme)
    "patch-64": dict(patch_size=(64, 64, 64)),
    # round 2: one lever changed from round 1's winner, window-nnunet ("pw-": percentile window)
    "pw-cosine": dict(window="percentile", schedule="cosine"),
    "pw-constant-lr": dict(window="percentile", schedule="constant"),
    "pw-adamw-lr1e-3": dict(window="percentile", lr=1e-3),
    "pw-batch4": dict(window="percentile", batch_size=4),
    "pw-patch-64": dict(window="percentile", patch_size=(64, 64, 64)),
    # round 3 (issue 24): the data's own grid. spacing None = the median spacing of the 26 training
    # cases (4.18 x 4.18 x 2.75 mm, nnU-Net's 3d_fullres target); whole cropped volumes there are up
    # to 144 x 80 x 144 voxels (3.6x the 6 mm volume), so patches with foreground oversampling and
    # Gaussian sliding-window validation are the first candidates measured.
    "native-p96": dict(window="percentile", spacing=None, patch_size=(96, 64, 96)),
    "native-p64": dict(window="percentile", spacing=None, patch_size=(64, 64, 64)),
    "native-whole": dict(window="percentile", spacing=None, max_patch_voxels=144 * 80 * 144),
}


def run(
    dataset_path: str,
    name: str,
    mode: str,
    max_steps: int,
    val_every: int,
    patience: int,
    min_delta: float,
    threads: int | None,
) -> Path:
    import torch

    from globalmask.dataset import load_dataset, resolve_split
    from globalmask.model import NetConfig
    from globalmask.preprocess import DEFAULT_WINDOW
    from globalmask.training import DataConfig, TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    settings = {**BASE, **CANDIDATES[name]}
    spacing = settings.pop("spacing", (6.0, 6.0, 6.0))  # None: the training split's median spacing
    ds = load_dataset(dataset_path)
    split, _ = resolve_split(ds)
    window = DEFAULT_WINDOW
    if settings.pop("window", None) == "percentile":  # nnU-Net's CT range, from the 26 training cases
        window = DataConfig(window="percentile").with_window(ds, split.train).window
    net = NetConfig(**settings.pop("net"))
    cfg = TrainConfig(
        mode=mode,
        seed=0,
        steps=max_steps,
        val_every=val_every,
        patience=patience,
        min_delta=min_delta,
        net=net,
        **settings,
    )
    run_dir = WORK / f"{name}-{mode.replace('+', '_')}"
    t0 = time.time()
    result = train(
        ds,
        run_dir,
        cfg,
        DataConfig(spacing=spacing, window=window, cache_dir=WORK / "cache"),
        device="cpu",
        resume=run_dir.exists(),
        progress=True,
    )
    import pandas as pd

    hist = pd.read_csv(run_dir / "history.csv")
    val = hist.dropna(subset=["val_dice"])
    per_structure = [c for c in val.columns if c.startswith("val_") and c != "val_dice"]
    best_row = val.loc[val["val_dice"].idxmax()]
    out = {
        "name": name,
        "mode": mode,
        "settings": {
            **{k: v for k, v in cfg.to_dict().items() if k not in ("augment",)},
            "window": list(window),
            "spacing": json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["preprocess"]["spacing"],
        },
        "command": f".venv/bin/python benchmarks/convergence.py {dataset_path} --run {name} --mode {mode}"
        f" --max-steps {max_steps} --val-every {val_every} --patience {patience} --min-delta {min_delta}",
        "steps": result.steps,
        "max_steps": max_steps,
        "best_step": result.best_step,
        "best_val_dice": result.best_val_dice,
        "best_val_per_structure": {c[4:]: float(best_row[c]) for c in per_structure},
        "converged": result.converged,
        "stop_reason": result.stop_reason,
        "train_seconds": result.seconds,
        "seconds_at_best": float(best_row["elapsed_s"]),
        "seconds_per_step": float(hist["elapsed_s"].iloc[-1] / len(hist)),
        "curve": {
            "step": val["step"].tolist(),
            "val_dice": val["val_dice"].tolist(),
            "elapsed_s": val["elapsed_s"].tolist(),
        },
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "note": f"wall time of this call {time.time() - t0:.0f} s",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{mode.replace('+', '_')}.json"
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(
        f"{name} {mode}: best validation Dice {result.best_val_dice:.4f} at step {result.best_step};"
        f" stopped at {result.steps} ({result.stop_reason}); {result.seconds / 60:.1f} min -> {path}"
    )
    return path


def table() -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    rows = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        sys.exit("no results in benchmarks/convergence/ yet")
    lines = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = sorted((r for r in rows if r["mode"] == mode), key=lambda r: -r["best_val_dice"])
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        for r in rs:
            c = r["curve"]
            a1.plot(c["step"], c["val_dice"], label=r["name"])
            a2.plot([t / 60 for t in c["elapsed_s"]], c["val_dice"], label=r["name"])
        a1.set_xlabel("training step")
        a2.set_xlabel("wall time (min, 2 CPU cores)")
        for a in (a1, a2):
            a.set_ylabel("validation Dice (10 cases, 5 structures)")
            a.grid(alpha=0.3)
        a2.legend(fontsize=7)
        fig.suptitle(f"OpenKBP, {mode} input, 26 training cases (6 mm unless the name says native)")
        png = RESULTS / f"curves_{mode.replace('+', '_')}.png"
        fig.savefig(png, dpi=100, bbox_inches="tight")
        plt.close(fig)
        tab = pd.DataFrame([
            {
                "candidate": r["name"],
                "plateau val Dice": f"{r['best_val_dice']:.3f}",
                "best step": r["best_step"],
                "steps run (max)": f"{r['steps']} ({r['max_steps']})",
                "converged": "yes" if r["converged"] else "**no**",
                "min to best": f"{r['seconds_at_best'] / 60:.1f}",
                "min to stop": f"{r['train_seconds'] / 60:.1f}",
                "s/step": f"{r['seconds_per_step']:.2f}",
                **{f"{k}": f"{v:.2f}" for k, v in r["best_val_per_structure"].items()},
            }
            for r in rs
        ])
        cols = list(tab.columns)
        lines += [f"### {mode} input", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in tab.itertuples(index=False)]
        lines += ["", f"![curves]({png.relative_to(HERE)})", "", "Reproduce a row:", ""]
        lines += [f"    {r['command']}" for r in rs]
        lines += [""]
    path = HERE / "convergence_table.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def snapshot() -> None:
    """Curves of runs still in progress (from their resumable state), so progress outlives the machine."""
    import torch

    for last in sorted(WORK.glob("*/last.pt")):
        name = last.parent.name
        if (RESULTS / f"{name}.json").exists():
            continue
        state = torch.load(last, map_location="cpu", weights_only=False)
        val = [h for h in state["history"] if "val_dice" in h]
        out = {
            "name": name,
            "in_progress": True,
            "steps": state["step"],
            "best_step": state["best_step"],
            "best_val_dice": state["best"],
            "plateau": state.get("plateau"),
            "elapsed_s": state.get("elapsed"),
            "curve": {
                "step": [h["step"] for h in val],
                "val_dice": [h["val_dice"] for h in val],
                "elapsed_s": [h.get("elapsed_s") for h in val],
            },
        }
        (RESULTS / "in_progress").mkdir(parents=True, exist_ok=True)
        (RESULTS / "in_progress" / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(
            f"{name}: step {state['step']}, best validation Dice {state['best']:.4f}"
            f" at step {state['best_step']} (in progress)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?")
    p.add_argument(
        "--run", nargs="+", choices=sorted(CANDIDATES), help="candidates to train (in order; finished ones are skipped)"
    )
    p.add_argument("--mode", default="ct")
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--min-delta", type=float, default=0.002)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--table", action="store_true", help="write convergence_table.md and the curves from the results")
    p.add_argument(
        "--snapshot", action="store_true", help="write the curves of runs still in progress to convergence/in_progress/"
    )
    args = p.parse_args()
    for name in args.run or []:
        if (RESULTS / f"{name}-{args.mode.replace('+', '_')}.json").exists():
            print(f"{name} {args.mode}: done already")
            continue
        run(args.dataset, name, args.mode, args.max_steps, args.val_every, args.patience, args.min_delta, args.threads)
        (RESULTS / "in_progress" / f"{name}-{args.mode.replace('+', '_')}.json").unlink(missing_ok=True)
    if args.snapshot:
        snapshot()
    if args.table:
        table()


if __name__ == "__main__":
    main()
