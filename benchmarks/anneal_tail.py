"""What the plateau stop leaves: continue a finished study run along its own poly schedule to its maximum.

The study stops a run once validation Dice has not risen by ``min_delta`` for ``patience`` checks. Its
poly learning rate is a function of the *maximum* steps, so a run stopped at step 2300 of 4000 never
annealed (lr still ~0.46 of its start). This copies one finished run's folder (the study's is never
written), switches early stopping off and resumes it to the maximum: the same weights, optimiser,
schedule and random state, as if the plateau rule had not stopped it. Only the validation split is
scored (every ``val_every`` steps, as in training); the test split is not read.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anneal_tail.py study-openkbp-native ct all 0 --threads 1

The run's history (validation Dice every 100 steps, before and after the stop) is written to
``benchmarks/anneal_tail/<mode>-n<size>-d<draw>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch

from globalmask.study import runner
from globalmask.study.plan import Plan
from globalmask.training import train

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("mode")
    ap.add_argument("size")
    ap.add_argument("draw", type=int)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    args.study = args.study.resolve()  # the run stores the split file by its absolute path
    torch.set_num_threads(args.threads)
    info = json.loads((args.study / "plan.json").read_text(encoding="utf-8"))
    plan = Plan.from_info(info)
    recipe = json.loads((args.study / "recipe_choice.json").read_text(encoding="utf-8"))["sweep_recipe"]
    run = next(r for r in plan.sweep(recipe) if r.mode == args.mode and r.size_label == args.size
               and r.draw == args.draw)
    src = args.study / "runs" / run.name / "model"
    name = f"{run.mode.replace('+', '_')}-n{run.size_label}-d{run.draw}"
    dst = HERE.parent / "runs" / "anneal_tail" / name / "model"
    stopped = json.loads((src / "done.json").read_text(encoding="utf-8"))
    if not dst.exists():  # a copy, with early stopping switched off in its stored settings
        shutil.copytree(src, dst)
        (dst / "done.json").unlink()
        state = torch.load(dst / "last.pt", map_location="cpu", weights_only=False)
        state["config"]["train"]["patience"] = None
        torch.save(state, dst / "last.pt")
        cfg_file = json.loads((dst / "config.json").read_text(encoding="utf-8"))
        cfg_file["train"]["patience"] = None
        (dst / "config.json").write_text(json.dumps(cfg_file, indent=2), encoding="utf-8")
    prepared = runner._prepared(args.study, info["dataset_root"], plan, run)
    tcfg = dataclasses.replace(plan.config.train_config(run.mode, run.train_cases, run.seed, run.steps),
                               patience=None)
    result = train(prepared, dst, tcfg, resume=True, progress=False)
    hist = [line.split(",") for line in (dst / "history.csv").read_text(encoding="utf-8").splitlines()[1:]]
    curve = [(int(h[0]), float(h[3])) for h in hist if len(h) > 3 and h[3]]
    out = {
        "run": run.name, "stopped": stopped, "max_steps": run.steps,
        "tail": {"steps": result.steps, "best_step": result.best_step, "best_val_dice": result.best_val_dice},
        "validation_curve": curve,
    }
    (HERE / "anneal_tail").mkdir(exist_ok=True)
    (HERE / "anneal_tail" / f"{name}.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("run", "stopped", "tail")}, indent=1))


if __name__ == "__main__":
    main()
