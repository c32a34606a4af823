"""Score trained models on the validation cases under every variation of the suite, and pick a recipe.

Each model is a checkpoint; its GBM recipe, preprocessing and input mode travel with it, and
:class:`globalmask.infer.Predictor` recomputes the GBM from the *varied* CT with the model's own
recipe, as in practice. Every case is varied once per variation (seeded per case, so every model
sees the identical scan) and every model predicts it; a variation that moves the patient moves the
reference labels with it (``apply_pair``). Nothing is trained here.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robustness/score.py \\
        ../shared/data/Dataset501_OpenKBPHeadNeck \\
        --model gbm:bone=runs/gbm_bone/model.pt --model gbm:percentile=runs/gbm_pct/model.pt ... \\
        --subset validation --out robustness-openkbp

writes ``per_case.csv`` (one row per model, variation, case and structure), ``summary.csv`` (mean
Dice per model and variation, and the drop from the clean scan) and ``choice.md`` (the rule of
``benchmarks/robustness/README.md`` applied to the GBM-only models, one per recipe).
Options: ``--variations voltage dose`` keeps some families; ``--contrast`` adds the thorax contrast
phases (labels heart 1 and aorta 4); ``--cases N`` takes the first N cases (a quick check).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from globalmask.dataset import load_dataset, resolve_split
from globalmask.infer import Predictor
from globalmask.io import read_volume
from globalmask.metrics import evaluate_volumes
from globalmask.shift import THORAX_CONTRAST, VARIATION_SUITE, AnyVariation
from globalmask.study.stats import ELIGIBLE_MARGIN, TIE_MARGIN, robust_choice

#: The choice rule's constants, fixed in README.md before any run.


def score(
    dataset: str, models: dict[str, Path], variations: list[AnyVariation], subset: str, seed: int, cases: int | None
) -> pd.DataFrame:
    ds = load_dataset(dataset)
    split, _ = resolve_split(ds)
    ids = list(split[subset])[:cases] if cases else list(split[subset])
    predictors = {name: Predictor(path, device="cpu") for name, path in models.items()}
    rows: list[dict] = []
    for n, cid in enumerate(ids, 1):
        ct, ref = read_volume(ds.cases[cid].image), read_volume(ds.cases[cid].label)
        for variation in [None, *variations]:
            t0 = time.perf_counter()
            varied, ref_v = (ct, ref) if variation is None else variation.apply_pair(ct, ref, seed=seed, case_id=cid)
            assert ref_v is not None
            for name, predictor in predictors.items():
                pred = predictor.predict(varied)
                for row in evaluate_volumes(pred, ref_v, ds.labels, cid):
                    rows.append({
                        "model": name,
                        "mode": str(predictor.spec.mode),
                        "recipe": predictor.spec.recipe.spec,
                        "family": "none" if variation is None else variation.family,
                        "variation": "none" if variation is None else variation.name,
                        **row,
                    })
            label = "none" if variation is None else variation.name
            print(
                f"[{n}/{len(ids)}] {cid} {label}: {len(predictors)} models in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
    return pd.DataFrame(rows)


def summarise(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per model and variation over cases and structures (a missed structure scores 0,
    an absent one is left out), and the drop from the same model's clean mean."""
    scored = per_case[per_case["status"] != "absent"].copy()
    scored["dice"] = scored["dice"].fillna(0.0)
    mean = (
        scored.groupby(["model", "mode", "recipe", "family", "variation"], sort=False)["dice"]
        .mean()
        .rename("dice")
        .reset_index()
    )
    clean = mean[mean["variation"] == "none"].set_index("model")["dice"]
    mean["drop"] = mean["model"].map(clean) - mean["dice"]
    return mean


def choose(summary: pd.DataFrame, mode: str = "gbm") -> tuple[str | None, pd.DataFrame]:
    """The rule of README.md on one mode's models (``globalmask.study.stats.robust_choice``, which the
    study's ``recipe_rule: robust`` applies too). Several models with one recipe (draws) are
    averaged per variation first."""
    sel = summary[summary["mode"] == mode]
    if sel.empty:
        return None, pd.DataFrame()
    return robust_choice(sel.groupby(["recipe", "variation"], sort=False)["dice"].mean().unstack("variation"))


def markdown(df: pd.DataFrame) -> str:
    """A plain markdown table (no tabulate dependency)."""
    df = df.reset_index()
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    head = [str(c) for c in df.columns]
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in cells)]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CHECKPOINT",
        help="a trained model (repeat); NAME labels it in the tables",
    )
    p.add_argument("--subset", default="validation", choices=["train", "validation", "test"])
    p.add_argument(
        "--variations", nargs="*", default=None, metavar="FAMILY", help="families to keep (default: the whole suite)"
    )
    p.add_argument("--contrast", action="store_true", help="add the thorax contrast phases (labels heart 1, aorta 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", type=int, default=None, help="only the first N cases (a quick check)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    models = {}
    for item in args.model:
        name, eq, path = item.partition("=")
        if not eq or not Path(path).is_file():
            p.error(f"--model {item!r}: expected NAME=CHECKPOINT with an existing checkpoint file")
        models[name] = Path(path)
    suite: list[AnyVariation] = [*VARIATION_SUITE, *(THORAX_CONTRAST if args.contrast else ())]
    if args.variations is not None:
        suite = [v for v in suite if v.family in set(args.variations)]
    args.out.mkdir(parents=True, exist_ok=True)
    per_case = score(args.dataset, models, suite, args.subset, args.seed, args.cases)
    per_case.to_csv(args.out / "per_case.csv", index=False)
    summary = summarise(per_case)
    summary.to_csv(args.out / "summary.csv", index=False)
    lines = [f"# Recipe choice under the variation suite ({args.subset}, {per_case['case'].nunique()} cases)", ""]
    lines.append(
        f"Rule (benchmarks/robustness/README.md): eligible if clean Dice >= best - {ELIGIBLE_MARGIN};"
        f" highest worst-case Dice; ties within {TIE_MARGIN} to the higher clean Dice."
    )
    lines.append("")
    winner, table = choose(summary)
    if winner is None:
        lines.append("No GBM-only models among the inputs: no choice made.")
    else:
        lines.append(f"**Chosen: `{winner}`**")
        lines.append("")
        lines.append(markdown(table))
    pivot = summary.pivot_table(index="variation", columns="model", values="drop", sort=False)
    lines += ["", "Dice drop per variation (clean minus varied; positive = worse):", "", markdown(pivot)]
    (args.out / "choice.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {args.out}/per_case.csv, summary.csv, choice.md")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
