"""The best any model can score at a study's grid spacing: the reference itself, round-tripped.

Each test case's reference labels are taken to the network grid exactly as training does
(canonical orientation, body crop, nearest-neighbour resampling to the target spacing), one-hot
encoded as if a perfect network had predicted them, and brought back to the scan's own grid with
globalmask's own inversion (linear per class, argmax). Dice and centre-of-mass error of that
round trip against the original reference are the ceiling set by resolution alone.

    .venv/bin/python benchmarks/resolution_ceiling.py ../shared/data/Dataset501_OpenKBPHeadNeck \
        --spacing 6 6 6 --recipe bone --out benchmarks/openkbp/resolution_ceiling.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from globalmask.dataset import load_dataset, resolve_split
from globalmask.io import read_volume, write_text
from globalmask.metrics import evaluate_volumes, mean_std_text
from globalmask.preprocess import PreprocessConfig, prepare_case, restore_volume


def ceiling(dataset: str, spacing: tuple[float, float, float], recipe: str, subset: str = "test") -> pd.DataFrame:
    ds = load_dataset(dataset)
    split, _ = resolve_split(ds)
    cases = ds.cases
    n_classes = max(ds.labels.values()) + 1
    rows = []
    for cid in split[subset]:
        case = cases[cid]
        ct, ref = read_volume(case.image), read_volume(case.label)
        prep = prepare_case(ct, recipe, PreprocessConfig(spacing=spacing), label=ref, case_id=cid)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(prep.label.astype(np.int64)), n_classes)
        probs = onehot.permute(3, 0, 1, 2).float()
        restored = restore_volume(probs, prep.geometry)
        rows += evaluate_volumes(restored, ref, ds.structures, cid)
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset")
    p.add_argument("--spacing", type=float, nargs=3, default=(6.0, 6.0, 6.0))
    p.add_argument("--recipe", default="bone")
    p.add_argument("--subset", default="test")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    df = ceiling(a.dataset, tuple(a.spacing), a.recipe, a.subset)
    df = df[df["status"] != "absent"]
    g = df.groupby("structure")
    table = pd.DataFrame(
        {
            "Dice": g["dice"].agg(lambda s: mean_std_text(s.mean(), s.std(ddof=1), 3)),
            "CoM error (mm)": g["com_mm"].agg(lambda s: mean_std_text(s.mean(), s.std(ddof=1), 2)),
            "HD95 (mm)": g["hd95_mm"].agg(lambda s: mean_std_text(s.mean(), s.std(ddof=1), 2)),
        }
    ).reset_index()
    spacing = " x ".join(f"{s:g}" for s in a.spacing)
    lines = [
        f"# Resolution ceiling at {spacing} mm ({a.subset} split, {df['case'].nunique()} cases)",
        "",
        "The reference labels themselves, taken to the network grid and back exactly as a prediction is;",
        "no model can score better than this at this spacing.",
        "",
        "```",
        f"python benchmarks/resolution_ceiling.py {a.dataset} --spacing {' '.join(f'{s:g}' for s in a.spacing)}"
        f" --recipe {a.recipe} --out {a.out}",
        "```",
        "",
        "| " + " | ".join(table.columns) + " |",
        "|" + "---|" * len(table.columns),
        *("| " + " | ".join(str(v) for v in row) + " |" for row in table.values),
        "",
    ]
    write_text(a.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
