"""Lay out the full-size re-measurement's study folder from the finished native study's run folders.

``study_annealed.yaml`` is the native study's full-size part with the plateau stop off. Its 9 runs are
the study's full-size runs continued from where the plateau rule stopped them (same weights,
optimiser, schedule and random state), so they need only the steps after the stop. This script
claims a new study folder for that plan and copies into it, per run, either the continuation that
``benchmarks/anneal_tail.py`` already made (``runs/anneal_tail/<mode>-nall-d<draw>/model``, finished or
not) or the study's own run folder with its ``done.json`` removed and early stopping switched off in
its stored settings (what ``anneal_tail.py`` does). The study's folders are only read. Run it when no
continuation is running (a running one would be copied half-way). Then

    OMP_NUM_THREADS=1 globalmask study run ../shared/data/Dataset501_OpenKBPHeadNeck \\
        --config benchmarks/openkbp_native/study_annealed.yaml --out study-openkbp-native-annealed --threads 1

resumes each run to its maximum (a finished continuation is only scored) and writes its record.

    .venv/bin/python benchmarks/openkbp_native/seed_annealed.py study-openkbp-native study-openkbp-native-annealed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from globalmask.study.config import StudyConfig
from globalmask.study.plan import make_plan
from globalmask.study.runner import check_study_folder, claim_study_folder

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NOT_COPIED = shutil.ignore_patterns(".globalmask.lock")  # a run folder's lock belongs to its own process


def _adopt(model_dir: Path, split_source: str, continue_run: bool) -> None:
    """Make a copied run folder the new study's: its split file is the new study's copy of the same split
    (the runner compares the path), and a stopped run gets early stopping switched off and its
    ``done.json`` removed, so that it resumes to its maximum. Both config.json and last.pt hold the
    settings."""
    if continue_run:
        (model_dir / "done.json").unlink(missing_ok=True)
    state = torch.load(model_dir / "last.pt", map_location="cpu", weights_only=False)
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    for stored in (state["config"], cfg):
        stored["split_source"] = split_source
        if continue_run:
            stored["train"]["patience"] = None
    torch.save(state, model_dir / "last.pt")
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the finished native study's folder (read only)")
    ap.add_argument("out", type=Path, help="the re-measurement's new study folder")
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared/data/Dataset501_OpenKBPHeadNeck"))
    ap.add_argument("--config", type=Path, default=HERE / "study_annealed.yaml")
    args = ap.parse_args()
    plan = make_plan(args.dataset, StudyConfig.from_yaml(args.config))
    check_study_folder(args.out, plan)
    claim_study_folder(args.out, plan, " ".join(sys.argv))
    for run in plan.all_runs(plan.fixed_recipe):
        dst = args.out / "runs" / run.name / "model"
        if dst.exists():
            print(f"{run.name}: already laid out")
            continue
        tail = ROOT / "runs" / "anneal_tail" / f"{run.mode.replace('+', '_')}-n{run.size_label}-d{run.draw}" / "model"
        src = args.study / "runs" / run.name / "model"
        split_source = str(args.out / "splits.json")  # as the runner names it: give --out the same way to both
        if tail.is_dir():
            shutil.copytree(tail, dst, ignore=NOT_COPIED)
            _adopt(dst, split_source, continue_run=False)
            print(f"{run.name}: from {tail} ({'finished' if (dst / 'done.json').exists() else 'to continue'})")
        else:
            shutil.copytree(src, dst, ignore=NOT_COPIED)
            _adopt(dst, split_source, continue_run=True)
            print(f"{run.name}: from {src}, stopped at {json.loads((src / 'done.json').read_text())['steps']}")


if __name__ == "__main__":
    main()
