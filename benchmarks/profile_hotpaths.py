"""Where the time goes: torch.profiler on the training step and on one prediction, cProfile on
the GBM recipes. Run before changing a hot path; the findings are kept in PROFILE.md.

    .venv/bin/python benchmarks/profile_hotpaths.py            # -> benchmarks/PROFILE.md
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from globalmask.infer import Predictor
from globalmask.io import write_text
from globalmask.masks import Recipe


def _table(prof, rows: int = 12) -> str:
    return (
        "```\n"
        + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)
        + "\n```"
    )


def profile_training(device, steps: int) -> str:
    prepared = bench._prepared()
    tr = bench._trainer(prepared, "ct+gbm", device)
    for _ in range(2):
        tr.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("## data: sample + augment"):
                x, y = tr.batch()
            with record_function("## network: forward + backward + AdamW"):
                tr.optimize(x, y)
    return (
        f"### Training step (ct+gbm, OpenKBP 6 mm, patch {bench.PATCH}, batch 2, {steps} steps)\n\n"
        + _table(prof, 16)
    )


def profile_prediction(device) -> str:
    ds = bench.load_dataset(bench.OPENKBP)
    case = ds.cases[ds.load_split().test[0]]
    with tempfile.TemporaryDirectory() as tmp:
        pred = Predictor(bench._model(Path(tmp)), device=str(device))
        pred.predict_files([case.image], Path(tmp) / "warm", progress=False)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            pred.predict_files([case.image], Path(tmp) / "out", progress=False)
    return "### One prediction end to end (OpenKBP test case)\n\n" + _table(prof)


def profile_recipes() -> str:
    ct = bench.big_ct()
    parts = ["### GBM recipes on a 512 x 512 x 200 CT (cProfile, top functions by own time)"]
    for name in ("body", "bone"):
        recipe = Recipe.parse(name)
        pr = cProfile.Profile()
        t = time.perf_counter()
        pr.runcall(recipe, ct.array, ct.affine)
        total = time.perf_counter() - t
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(6)
        body = "\n".join(
            line
            for line in buf.getvalue().splitlines()
            if (line.strip() and not line.startswith(("   Ordered", "      "))) or "(" in line
        )
        parts.append(f"`{recipe.spec}`: {total:.2f} s\n\n```\n{body.strip()}\n```")
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=bench.ROOT / "benchmarks" / "PROFILE.md")
    args = ap.parse_args()
    device = bench.resolve_device(args.device)
    parts = [
        f"# Profiles\n\nMachine: {bench.machine(device)}.  \n"
        f"Command: `.venv/bin/python benchmarks/profile_hotpaths.py {' '.join(sys.argv[1:])}`\n"
    ]
    parts.append(profile_training(device, args.steps))
    parts.append(profile_prediction(device))
    parts.append(profile_recipes())
    write_text(args.out, "\n\n".join(parts) + "\n")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
