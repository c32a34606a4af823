"""Statistics of a study: pure functions of the per-case table, and the typed results of a study.

``analyse(plan, records)`` turns merged run records into :class:`StudyResults`, the one object the
report reads. Statistics use only complete pairs: a comparison of two modes at a training size
pools the draws that both modes have finished, so a half-merged study reports what it has and
lists the rest as pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from ..errors import GlobalmaskError
from ..io import json_safe
from .config import ALL, StudyConfig
from .plan import Plan, RunSpec
from .records import RunRecord

COMPARISONS = (("ct+gbm", "ct"), ("gbm", "ct"), ("ct+coords", "ct"))


def summary_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """mean ± std per (recipe, mode, size, subset, shift, structure), plus 'all' structures.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.

    Returns
    -------
    pandas.DataFrame
        One row per key and structure: n, mean and std of Dice, CoM error and HD95, and the misses.
    """
    keys = ["recipe", "mode", "size", "subset", "shift"]
    scored = per_case[per_case["status"] != "absent"]
    rows = []
    for key, g in scored.groupby(keys, sort=False):
        for structure, gs in [*g.groupby("structure", sort=False), ("all", g)]:
            rows.append(
                {
                    **dict(zip(keys, key)),
                    "structure": structure,
                    "n": len(gs),
                    "dice_mean": gs["dice"].mean(),
                    "dice_std": gs["dice"].std(ddof=1),
                    "com_mm_mean": gs["com_mm"].mean(),
                    "com_mm_std": gs["com_mm"].std(ddof=1),
                    "hd95_mm_mean": gs["hd95_mm"].mean(),
                    "hd95_mm_std": gs["hd95_mm"].std(ddof=1),
                    "missed": int((gs["status"] == "missed").sum()),
                }
            )
    return pd.DataFrame(rows)


def paired_comparison(
    per_case: pd.DataFrame,
    a: str,
    b: str,
    size: str,
    structure: str | None = None,
    shift: str = "none",
    recipe: str | None = None,
) -> dict:
    """Compare mode ``a`` with mode ``b`` at one training size on the test split.

    Relative improvement = (mean Dice of a - mean Dice of b) / mean Dice of b x 100, over every
    (draw, test case, structure) score. The Wilcoxon signed-rank test (two-sided) pairs the
    *test cases*: each case's Dice averaged over draws (and structures, unless one is given), so
    the unit of replication is the patient, not a repeated measurement of one.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    a, b : str
        The modes compared (a against b).
    size : str
        The training size.
    structure : str, optional
        One structure; all pooled when omitted.
    shift : str
        The variation scored (``"none"``: the clean test CTs).
    recipe : str, optional
        Only the runs of this GBM recipe.

    Returns
    -------
    dict
        Means, relative improvement, counts and the Wilcoxon p; empty where a mode has no score.
    """
    sel = per_case[
        (per_case["subset"] == "test")
        & (per_case["shift"] == shift)
        & (per_case["size"].astype(str) == str(size))
        & (per_case["status"] != "absent")
    ]
    if recipe is not None:
        sel = sel[sel["recipe"] == recipe]
    if structure is not None:
        sel = sel[sel["structure"] == structure]
    da, db = sel[sel["mode"] == a], sel[sel["mode"] == b]
    if da.empty or db.empty:
        return {}
    key = ["draw", "case", "structure"]
    merged = da[key + ["dice"]].merge(db[key + ["dice"]], on=key, suffixes=("_a", "_b"))
    if len(merged) != len(da) or len(merged) != len(db):
        raise GlobalmaskError(f"runs of {a} and {b} at size {size} are not paired (different draws or cases)")
    per_case_mean = merged.groupby("case")[["dice_a", "dice_b"]].mean()
    diff = per_case_mean["dice_a"] - per_case_mean["dice_b"]
    if len(diff) < 2 or np.allclose(diff, 0):
        p = 1.0
    else:
        p = float(wilcoxon(per_case_mean["dice_a"], per_case_mean["dice_b"], alternative="two-sided").pvalue)
    mean_a, mean_b = float(merged["dice_a"].mean()), float(merged["dice_b"].mean())
    return {
        "a": a,
        "b": b,
        "size": str(size),
        "structure": structure or "all",
        "n_pairs": int(len(merged)),
        "n_cases": int(len(per_case_mean)),
        "n_draws": int(merged["draw"].nunique()),
        "dice_a": mean_a,
        "dice_b": mean_b,
        "relative_improvement_pct": (mean_a - mean_b) / mean_b * 100 if mean_b > 0 else float("inf"),
        "cases_a_better": int((diff > 0).sum()),
        "wilcoxon_p": p,
    }


#: Name of the pooled test set in tables: the test split and every external set together.
POOLED = "pooled"


def bootstrap_relative_change(
    a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Relative change of mean Dice, (mean a - mean b) / mean b x 100, with a percentile bootstrap CI.

    ``a`` and ``b`` are (draws, patients) arrays of per-patient mean Dice, paired: the same patients
    and, per draw, the same training cases. Each replicate resamples the patients and, separately,
    the draws with replacement (a two-level bootstrap: a new hospital brings other patients, a new
    study other training cases), and recomputes the ratio of means on the resampled grid. Returns
    (estimate, low, high); with one draw it is the ordinary bootstrap over patients.

    Parameters
    ----------
    a, b : numpy.ndarray
        Paired (draws, patients) arrays of per-patient mean Dice (one draw: a vector of patients).
    n_boot : int
        Bootstrap replicates.
    level : float
        Coverage of the interval.
    seed : int
        Seed of the resampling.

    Returns
    -------
    tuple of float
        (estimate, low, high), in percent.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape != b.shape or a.size == 0:
        raise GlobalmaskError(
            f"bootstrap needs two paired (draws, patients) arrays of one shape, got {a.shape} and {b.shape}"
        )
    n_d, n_p = a.shape
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=n_boot).astype(float)  # (B, patients): times drawn
    wd = rng.multinomial(n_d, np.full(n_d, 1 / n_d), size=n_boot).astype(float)  # (B, draws)
    mean_a = np.einsum("bd,dp,bp->b", wd, a, wp)
    mean_b = np.einsum("bd,dp,bp->b", wd, b, wp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (mean_a - mean_b) / mean_b * 100
    estimate = float((a.mean() - b.mean()) / b.mean() * 100) if b.mean() > 0 else float("inf")
    tail = (1 - level) / 2 * 100
    low, high = (float(v) for v in np.percentile(rel, [tail, 100 - tail]))
    return estimate, low, high


def effect_verdict(low: float, high: float) -> str:
    """Plain words for a confidence interval of a relative change (a minus b).

    Parameters
    ----------
    low, high : float
        The confidence interval's bounds.

    Returns
    -------
    str
        ``"better"``, ``"worse"`` or ``"no difference shown"``.
    """
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no difference shown"


def set_comparison(per_case: pd.DataFrame, a: str, b: str, size: str, subsets: list[str], recipe: str | None = None,
                   n_boot: int = 10_000, seed: int = 0) -> dict:
    """Mode ``a`` against mode ``b`` at one training size over the patients of ``subsets`` (test sets).

    The unit is the patient (a case of one subset): each patient's Dice is averaged over structures
    per draw; the relative change of mean Dice gets a two-level bootstrap CI
    (:func:`bootstrap_relative_change`) and the Wilcoxon signed-rank test pairs the patients'
    means over draws. Only patients scored by every draw of both modes count; shifts are excluded.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    a, b : str
        The modes compared (a against b).
    size : str
        The training size.
    subsets : list of str
        The test sets pooled (one name: that set alone).
    recipe : str, optional
        Only the runs of this GBM recipe.
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        Means, relative change with its CI, counts, the Wilcoxon p and the verdict; empty where a mode
        has no score.
    """
    sel = per_case[
        per_case["subset"].isin(subsets)
        & (per_case["shift"] == "none")
        & (per_case["size"].astype(str) == str(size))
        & (per_case["status"] != "absent")
    ]
    if recipe is not None:
        sel = sel[sel["recipe"] == recipe]
    key = ["draw", "subset", "case", "structure"]
    da, db = sel[sel["mode"] == a], sel[sel["mode"] == b]
    if da.empty or db.empty:
        return {}
    merged = da[key + ["dice"]].merge(db[key + ["dice"]], on=key, suffixes=("_a", "_b"))
    if len(merged) != len(da) or len(merged) != len(db):
        raise GlobalmaskError(f"runs of {a} and {b} at size {size} are not paired (different draws or cases)")
    per_patient = merged.groupby(["draw", "subset", "case"])[["dice_a", "dice_b"]].mean()
    grid_a = per_patient["dice_a"].unstack(["subset", "case"]).dropna(axis=1)  # (draws, patients scored in every draw)
    grid_b = per_patient["dice_b"].unstack(["subset", "case"])[grid_a.columns]
    estimate, low, high = bootstrap_relative_change(grid_a.to_numpy(), grid_b.to_numpy(), n_boot=n_boot, seed=seed)
    pa, pb = grid_a.mean(axis=0), grid_b.mean(axis=0)
    diff = pa - pb
    p = 1.0 if len(diff) < 2 or np.allclose(diff, 0) else float(wilcoxon(pa, pb, alternative="two-sided").pvalue)
    return {
        "a": a,
        "b": b,
        "size": str(size),
        "test_set": subsets[0] if len(subsets) == 1 else POOLED,
        "n_patients": int(grid_a.shape[1]),
        "n_draws": int(grid_a.shape[0]),
        "dice_a": float(grid_a.to_numpy().mean()),
        "dice_b": float(grid_b.to_numpy().mean()),
        "relative_change_pct": estimate,
        "ci_low_pct": low,
        "ci_high_pct": high,
        "patients_a_better": int((diff > 0).sum()),
        "wilcoxon_p": p,
        "verdict": effect_verdict(low, high),
    }


def set_comparisons(
    per_case: pd.DataFrame, plan: Plan, recipe: str, sizes: list[str], n_boot: int = 10_000
) -> pd.DataFrame:
    """:func:`set_comparison` for every compared pair of modes, size and test set (and all pooled).

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    plan : Plan
        The study's plan (its modes and test sets).
    recipe : str
        The sweep's GBM recipe.
    sizes : list of str
        The training sizes.
    n_boot : int
        Bootstrap replicates per comparison.

    Returns
    -------
    pandas.DataFrame
        One row per comparison (:func:`set_comparison`).
    """
    sets = [s for s in plan.test_sets if (per_case["subset"] == s).any()]
    groups = [[s] for s in sets] + ([sets] if len(sets) > 1 else [])
    rows = []
    for a, b in COMPARISONS:
        if a in plan.config.modes and b in plan.config.modes:
            pairs = complete_pairs(per_case[per_case["recipe"] == recipe], a, b)
            if pairs.empty:
                continue
            for size in sizes:
                for group in groups:
                    c = set_comparison(pairs, a, b, size, group, recipe, n_boot=n_boot)
                    if c:
                        rows.append(c)
    return pd.DataFrame(rows)


def shift_drops(per_case: pd.DataFrame, recipe: str) -> pd.DataFrame:
    """Dice drop per mode, size and shift level: mean Dice unshifted minus mean Dice shifted.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    recipe : str
        The sweep's GBM recipe.

    Returns
    -------
    pandas.DataFrame
        One row per (mode, size, shift) of the test split: dice_none, dice_shifted, dice_drop.
    """
    sel = per_case[(per_case["recipe"] == recipe) & (per_case["subset"] == "test") & (per_case["status"] != "absent")]
    base = sel[sel["shift"] == "none"].groupby(["mode", "size"])["dice"].mean()
    rows = []
    for (mode, size, shift), g in sel[sel["shift"] != "none"].groupby(["mode", "size", "shift"], sort=False):
        rows.append(
            {
                "mode": mode,
                "size": str(size),
                "shift": shift,
                "dice_none": base[(mode, size)],
                "dice_shifted": g["dice"].mean(),
                "dice_drop": base[(mode, size)] - g["dice"].mean(),
            }
        )
    return pd.DataFrame(rows)


#: The mode every other mode's drop is held against in the per-family robustness target.
REFERENCE_MODE = "ct"
#: The modes the target is about: their mean Dice drop should be no larger than :data:`REFERENCE_MODE`'s.
TARGET_MODES = ("gbm", "ct+gbm")


def shift_families(shifts: Any) -> dict[str, tuple[str, str]]:
    """Family and level of every variation of a study that names its family (the realistic suite).

    Parameters
    ----------
    shifts : list of dict or str
        The study configuration's ``shifts`` (``to_dict`` of each variation).

    Returns
    -------
    dict
        Variation name (the ``shift`` column of the records) -> (family, level), in the configuration's
        order; empty for a study whose shifts carry no family (the old scanner shifts). Where some do,
        a shift without one is family ``scanner``, its level its name.
    """
    if not isinstance(shifts, list) or not any(isinstance(s, dict) and "family" in s for s in shifts):
        return {}
    out = {}
    for s in shifts:
        family = s.get("family", "scanner")
        name = str(s["name"])
        out[name] = (family, name[len(family) + 1:] if name.startswith(f"{family}-") else name)
    return out


def _patient_drops(per_case: pd.DataFrame, recipe: str, families: Mapping[str, tuple[str, str]],
                   test_sets: list[str]) -> pd.DataFrame:
    """Paired drops (clean minus varied Dice of the same draw, patient and structure), averaged per
    patient: one row per (test set, shift, mode, size, patient), with the draws and scores behind it."""
    sel = per_case[
        (per_case["recipe"] == recipe) & per_case["subset"].isin(test_sets) & (per_case["status"] != "absent")
    ]
    sel = sel.assign(size=sel["size"].astype(str))
    key = ["subset", "mode", "size", "draw", "case", "structure"]
    clean = sel[sel["shift"] == "none"][key + ["dice"]]
    varied = sel[sel["shift"].isin(list(families))][key + ["shift", "dice"]]
    pairs = varied.merge(clean, on=key, suffixes=("_varied", "_clean"))
    pairs["drop"] = pairs["dice_clean"] - pairs["dice_varied"]
    agg = {"dice_clean": ("dice_clean", "sum"), "dice_varied": ("dice_varied", "sum"), "drop": ("drop", "mean"),
           "n_scores": ("drop", "size"), "draws": ("draw", lambda d: frozenset(d))}
    return pairs.groupby(["subset", "shift", "mode", "size", "case"], sort=False).agg(**agg).reset_index()


def family_drops(per_case: pd.DataFrame, recipe: str, families: Mapping[str, tuple[str, str]],
                 test_sets: list[str]) -> pd.DataFrame:
    """Mean Dice drop per test set, variation family and level, mode and training size, paired.

    The drop is clean minus varied Dice over the same (draw, patient, structure) scores (positive =
    worse); a pose change moves the reference labels with the patient, and the varied score is
    against the moved labels. Its spread is that of the per-patient drops (each patient's drop
    averaged over draws and structures). For every mode other than :data:`REFERENCE_MODE`, the
    excess over the reference's drop is paired by patient, with its standard error.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    recipe : str
        The sweep's GBM recipe.
    families : Mapping
        :func:`shift_families` of the study's shifts.
    test_sets : list of str
        The sets to report (the test split and the external sets); validation is never one.

    Returns
    -------
    pandas.DataFrame
        One row per (test_set, family, level, mode, size): shift, n_patients, n_draws, dice_clean,
        dice_varied, dice_drop, drop_sd (sample std over patients), and excess_vs_ref, excess_se,
        n_paired (NaN for the reference mode or where it has no score). Empty without varied scores.
    """
    if per_case.empty or not families:
        return pd.DataFrame()
    patients = _patient_drops(per_case, recipe, families, test_sets)
    if patients.empty:
        return pd.DataFrame()
    ref = patients[patients["mode"] == REFERENCE_MODE].set_index(["subset", "shift", "size", "case"])["drop"]
    rows = []
    for (subset, shift, mode, size), g in patients.groupby(["subset", "shift", "mode", "size"], sort=False):
        n = int(g["n_scores"].sum())
        row: dict[str, Any] = {
            "test_set": subset, "family": families[shift][0], "level": families[shift][1], "shift": shift, "mode": mode,
            "size": size, "n_patients": len(g), "n_draws": len(frozenset().union(*g["draws"])),
            "dice_clean": g["dice_clean"].sum() / n, "dice_varied": g["dice_varied"].sum() / n,
            "dice_drop": (g["dice_clean"].sum() - g["dice_varied"].sum()) / n,
            "drop_sd": float(g["drop"].std(ddof=1)) if len(g) > 1 else float("nan"),
            "excess_vs_ref": float("nan"), "excess_se": float("nan"), "n_paired": 0,
        }
        if mode != REFERENCE_MODE:
            both = (
                g.set_index(["subset", "shift", "size", "case"])["drop"]
                .to_frame("a")
                .join(ref.rename("b"), how="inner")
            )
            if not both.empty:
                excess = both["a"] - both["b"]
                row["excess_vs_ref"] = float(excess.mean())
                row["excess_se"] = float(excess.std(ddof=1) / np.sqrt(len(excess))) if len(excess) > 1 else float("nan")
                row["n_paired"] = len(excess)
        rows.append(row)
    order = {name: i for i, name in enumerate(families)}
    df = pd.DataFrame(rows)
    df["_set"] = df["test_set"].map({s: i for i, s in enumerate(test_sets)})
    df["_shift"] = df["shift"].map(order)
    return df.sort_values(["_set", "_shift"], kind="stable").drop(columns=["_set", "_shift"]).reset_index(drop=True)


def family_verdicts(drops: pd.DataFrame) -> pd.DataFrame:
    """Whether the robustness target holds per test set and family.

    The target: at every level and training size, the mean Dice drop of each of :data:`TARGET_MODES`
    is no larger than :data:`REFERENCE_MODE`'s at the same size. A (level, size) without a reference
    score is not judged; a family with none judged is ``"not judged"``.

    Parameters
    ----------
    drops : pandas.DataFrame
        :func:`family_drops`.

    Returns
    -------
    pandas.DataFrame
        One row per (test_set, family), in the order of ``drops``: verdict (``"holds"``, ``"does not
        hold"`` or ``"not judged"``), judged (number of (level, mode, size) cells compared) and
        breaks, a list of dicts (level, mode, size, dice_drop, ref_drop, excess_vs_ref, excess_se,
        n_paired), one per cell where the target fails.
    """
    if drops.empty:
        return pd.DataFrame(columns=["test_set", "family", "verdict", "judged", "breaks"])
    rows = []
    for (test_set, family), g in drops.groupby(["test_set", "family"], sort=False):
        ref = g[g["mode"] == REFERENCE_MODE].set_index(["level", "size"])["dice_drop"]
        judged, breaks = 0, []
        for r in g[g["mode"].isin(TARGET_MODES)].to_dict(orient="records"):
            if (r["level"], r["size"]) not in ref.index:
                continue
            judged += 1
            ref_drop = float(ref[(r["level"], r["size"])])
            if r["dice_drop"] > ref_drop + 1e-12:  # equal drops computed from other scores may differ in the last bit
                keys = ("level", "mode", "size", "dice_drop", "excess_vs_ref", "excess_se", "n_paired")
                breaks.append({**{k: r[k] for k in keys}, "ref_drop": ref_drop})
        verdict = "not judged" if not judged else ("does not hold" if breaks else "holds")
        rows.append({"test_set": test_set, "family": family, "verdict": verdict, "judged": judged, "breaks": breaks})
    return pd.DataFrame(rows)


def recipe_ablation(per_case: pd.DataFrame) -> pd.DataFrame:
    """GBM-only models at the full training size, one row per recipe, best first.

    Ranked on the **validation** split only (fewest missed structures, then lowest mean
    centre-of-mass error, then highest Dice); test figures are reported beside, never used.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.

    Returns
    -------
    pandas.DataFrame
        Per recipe: Dice, CoM error and misses on validation and test, best first.
    """
    sel = per_case[
        (per_case["mode"] == "gbm")
        & (per_case["size"].astype(str) == ALL)
        & (per_case["shift"] == "none")
        & (per_case["status"] != "absent")
    ]
    rows = []
    for recipe, g in sel.groupby("recipe", sort=False):
        row: dict[str, Any] = {"recipe": recipe}
        for subset in ("validation", "test"):
            gs = g[g["subset"] == subset]
            row[f"{subset}_dice"] = gs["dice"].mean()
            row[f"{subset}_com_mm"] = gs["com_mm"].mean()
            row[f"{subset}_missed"] = int((gs["status"] == "missed").sum())
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(
            ["validation_missed", "validation_com_mm", "validation_dice"], ascending=[True, True, False]
        ).reset_index(drop=True)
    return df


#: The robust recipe rule (benchmarks/robustness/README.md, written before any run): a recipe is
#: eligible when its clean validation Dice is within ELIGIBLE_MARGIN of the best; the winner has the
#: highest worst-case Dice over clean and every variation, a tie within TIE_MARGIN going to the
#: higher clean Dice.
ELIGIBLE_MARGIN = 0.03
TIE_MARGIN = 0.01
RECIPE_RULES = ("validation", "robust")


def robust_choice(dice: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The robust rule on a (recipe x variation) table of mean Dice with a ``"none"`` column (clean).

    Returns the winner and the ranking: clean, worst-case Dice, the variation that gave it, the
    worst drop, eligibility and the choice.

    Parameters
    ----------
    dice : pandas.DataFrame
        :func:`robust_recipe_table`: recipes as rows, variations as columns.

    Returns
    -------
    tuple of (str, pandas.DataFrame)
        The winning recipe and the ranking, highest worst-case Dice first.
    """
    if dice.empty or "none" not in dice.columns:
        raise GlobalmaskError("the robust recipe rule needs clean ('none') validation Dice for every recipe")
    varied = dice.drop(columns="none")
    table = pd.DataFrame({"clean": dice["none"], "worst": dice.min(axis=1), "worst_variation": dice.idxmin(axis=1)})
    table["worst_drop"] = (dice["none"] - varied.min(axis=1)) if not varied.empty else 0.0
    table["eligible"] = table["clean"] >= table["clean"].max() - ELIGIBLE_MARGIN
    candidates = table[table["eligible"]]
    tied = candidates[candidates["worst"] >= candidates["worst"].max() - TIE_MARGIN]
    winner = str(tied["clean"].idxmax())
    table["chosen"] = table.index == winner
    return winner, table.sort_values("worst", ascending=False)


def robust_recipe_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean validation Dice (a miss scores 0) of the full-size GBM-only models, recipe x variation.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.

    Returns
    -------
    pandas.DataFrame
        Recipes as rows, variations (``"none"``: clean) as columns.
    """
    sel = per_case[
        (per_case["mode"] == "gbm")
        & (per_case["size"].astype(str) == ALL)
        & (per_case["subset"] == "validation")
        & (per_case["status"] != "absent")
    ]
    return sel.groupby(["recipe", "shift"], sort=False)["dice"].mean().unstack("shift")


def ablation_winner(plan: Plan, ablation_records: Sequence[RunRecord | None]) -> str | None:
    """The recipe the ablation (stage 1) picks under the plan's rule; None until every stage-1 record exists.

    The runner (which recipe stage 2 trains with) and the report (which recipe it calls the sweep's) both
    ask this one function, so the two cannot disagree.

    Parameters
    ----------
    plan : Plan
        The study's plan (its ``recipe_rule``).
    ablation_records : sequence of RunRecord or None
        One entry per stage-1 run of the plan, None where its record is missing.

    Returns
    -------
    str or None
        The winning recipe, or None.
    """
    if not ablation_records or not all(ablation_records):
        return None
    per_case = pd.concat([r.per_case() for r in ablation_records if r is not None], ignore_index=True)
    return choose_recipe(per_case, plan.config.recipe_rule)


def choose_recipe(per_case: pd.DataFrame, rule: str = "validation") -> str:
    """The ablation's winner on the validation split: by :func:`recipe_ablation` (``"validation"``:
    fewest misses, lowest CoM error, highest Dice) or by :func:`robust_choice` (``"robust"``).

    Parameters
    ----------
    per_case : pandas.DataFrame
        The per-case table of the ablation's runs.
    rule : str
        ``"validation"`` or ``"robust"``.

    Returns
    -------
    str
        The winning recipe.
    """
    if rule == "robust":
        table = robust_recipe_table(per_case)
        if table.empty:
            raise GlobalmaskError("no GBM-only full-size validation results to choose a recipe from")
        return robust_choice(table)[0]
    if rule != "validation":
        raise GlobalmaskError(f"recipe rule must be one of {RECIPE_RULES}, got {rule!r}")
    table = recipe_ablation(per_case)
    if table.empty:
        raise GlobalmaskError("no GBM-only full-size validation results to choose a recipe from")
    return str(table.iloc[0]["recipe"])


def complete_pairs(per_case: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Rows of modes a and b restricted to the (size, draw) both have finished (others: pending).

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    a, b : str
        The two modes.

    Returns
    -------
    pandas.DataFrame
        The rows of both modes at the (recipe, size, draw) keys both have.
    """
    keys_a = set(
        map(tuple, per_case[per_case["mode"] == a][["recipe", "size", "draw"]].astype(str).drop_duplicates().to_numpy())
    )
    keys_b = set(
        map(tuple, per_case[per_case["mode"] == b][["recipe", "size", "draw"]].astype(str).drop_duplicates().to_numpy())
    )
    both = keys_a & keys_b
    sel = per_case[per_case["mode"].isin([a, b])]
    mask = [tuple(k) in both for k in sel[["recipe", "size", "draw"]].astype(str).to_numpy()]
    return sel[mask]


@dataclass
class RunSummary:
    """One run as the report lists it."""

    run_id: str
    name: str
    role: str  # "sweep" or "ablation"
    mode: str
    recipe: str
    size_label: str
    draw: int
    train_ids: list[str]
    steps: int
    max_steps: int
    best_step: int
    best_val_dice: float | None
    converged: bool | None
    train_seconds: float
    total_seconds: float
    test_dice_mean: float
    device: str
    threads: int = 1  # torch threads the run trained with: CPU time = wall time x threads


@dataclass
class StudyResults:
    """Everything the report shows, computed from run records only."""

    plan: Plan
    sweep_recipe: str | None
    recipe_winner: str | None
    sizes: list[str]
    runs: list[RunSummary]
    pending: list[str]
    per_case: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    shift_drops: pd.DataFrame
    recipe_ablation: pd.DataFrame
    subsets: dict[str, list[str]] = field(default_factory=dict)
    # sweep runs whose ids wait for the recipe ablation (an "auto" recipe, stage 1 incomplete)
    unplanned: int = 0
    # per test set and pooled, with bootstrap CIs
    set_comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    # per test set, family and level (the suite's studies only)
    family_drops: pd.DataFrame = field(default_factory=pd.DataFrame)
    # the stage-1 (ablation) runs' rows only: the recipe choice and its tables read these, never the
    # sweep's later draws of the winning recipe (pooling those in would rank the recipes on unequal
    # evidence and could name another winner than the one the sweep was run with)
    ablation_per_case: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def config(self) -> StudyConfig:
        """The study's configuration.

        Returns
        -------
        StudyConfig
            ``plan.config``.
        """
        return self.plan.config

    @property
    def n_pending(self) -> int:
        """Runs of the plan without a record: the listed ids plus the sweep runs not yet planned.

        Returns
        -------
        int
            The number of runs without a record.
        """
        return len(self.pending) + self.unplanned

    @property
    def complete(self) -> bool:
        """Whether every run of the plan has a record and the sweep's recipe is known.

        Returns
        -------
        bool
            True when nothing is pending.
        """
        return not self.pending and self.sweep_recipe is not None

    def to_json(self) -> dict[str, Any]:
        """The results as ``results.json`` holds them.

        Returns
        -------
        dict
            JSON-safe: the plan's identity, summaries, comparisons, drops, the ablation and every run.
        """
        p = self.plan
        return json_safe(
            {
                "plan_hash": p.hash,
                "dataset": p.dataset_root,
                "dataset_name": p.dataset_name,
                "dataset_fingerprint": p.dataset_fingerprint,
                "split_source": p.split_source,
                "n_train": p.n_train,
                "n_validation": len(p.split.validation),
                "n_test": len(p.split.test),
                "external_test": [
                    {"name": e.name, "n": len(e.case_ids), "fingerprint": e.fingerprint} for e in p.external
                ],
                "structures": p.structures,
                "config": p.config.to_dict(),
                "sweep_recipe": self.sweep_recipe,
                "recipe_winner": self.recipe_winner,
                "sizes": self.sizes,
                "runs": [r.__dict__ for r in self.runs],
                "pending": self.pending,
                "unplanned_sweep_runs": self.unplanned,
                "summary": self.summary.to_dict(orient="records"),
                "comparisons": self.comparisons.to_dict(orient="records"),
                "set_comparisons": self.set_comparisons.to_dict(orient="records"),
                "shift_drops": self.shift_drops.to_dict(orient="records"),
                "recipe_ablation": self.recipe_ablation.to_dict(orient="records"),
                # only where the shifts carry a family: an old study's results.json stays as it was
                **(
                    {"family_drops": self.family_drops.to_dict(orient="records")} if not self.family_drops.empty else {}
                ),
            }
        )


def _summarise(rec: RunRecord, role: str, name: str) -> RunSummary:
    test = [
        m["dice"]
        for m in rec.metrics
        if m["subset"] == "test" and m["shift"] == "none" and m.get("status") != "absent" and m.get("dice") is not None
    ]
    return RunSummary(
        rec.run_id, name, role, rec.run.mode, rec.run.recipe, rec.run.size_label, rec.run.draw, rec.train_ids,
        rec.steps, rec.max_steps, rec.best_step, rec.best_val_dice, rec.converged, rec.train_seconds,
        rec.total_seconds, float(np.mean(test)) if test else float("nan"),
        str(rec.machine.get("device", "")), int(rec.machine.get("threads") or 1),
    )


def analyse(plan: Plan, records: Mapping[str, RunRecord]) -> StudyResults:
    """Merge records into results; runs of the plan without a record are listed as pending.

    Parameters
    ----------
    plan : Plan
        The study's plan.
    records : Mapping
        Run id -> :class:`RunRecord`, every record found.

    Returns
    -------
    StudyResults
        Everything the report shows.
    """
    ablation = plan.ablation()
    ablation_recs = [records.get(plan.run_id(r)) for r in ablation]
    ablation_done = [r for r in ablation_recs if r]
    ablation_pc = pd.DataFrame()
    if ablation_done:
        ablation_pc = pd.concat([r.per_case() for r in ablation_done], ignore_index=True)
    winner = ablation_winner(plan, ablation_recs)
    recipe = plan.fixed_recipe or winner
    runs: list[RunSpec] = plan.all_runs(recipe)
    sweep_names = {r.name for r in plan.sweep(recipe)} if recipe else set()
    summaries, frames, pending = [], [], []
    for r in runs:
        rec = records.get(plan.run_id(r))
        if rec is None:
            pending.append(plan.run_id(r))
            continue
        summaries.append(_summarise(rec, "sweep" if r.name in sweep_names else "ablation", r.name))
        frames.append(rec.per_case())
    unplanned = 0
    if recipe is None:  # the sweep's size does not depend on the recipe it will use
        shared = {r.name for r in ablation}
        unplanned = len([r for r in plan.sweep(ablation[0].recipe) if r.name not in shared])
    per_case = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary = summary_table(per_case) if not per_case.empty else pd.DataFrame()
    sizes = list(dict.fromkeys(r.size_label for r in runs if r.name in sweep_names))
    comparisons = []
    if recipe is not None and not per_case.empty:
        for a, b in COMPARISONS:
            if a in plan.config.modes and b in plan.config.modes:
                pairs = complete_pairs(per_case[per_case["recipe"] == recipe], a, b)
                for size in sizes:
                    for structure in [None, *plan.structures]:
                        c = paired_comparison(pairs, a, b, size, structure, recipe=recipe) if not pairs.empty else {}
                        if c:
                            comparisons.append(c)
    drops = shift_drops(per_case, recipe) if (recipe is not None and not per_case.empty) else pd.DataFrame()
    by_set, by_family = pd.DataFrame(), pd.DataFrame()
    if recipe is not None and not per_case.empty:
        by_set = set_comparisons(per_case, plan, recipe, sizes)
        by_family = family_drops(per_case, recipe, shift_families(plan.config.shifts), plan.test_sets)
    ablation_table = recipe_ablation(ablation_pc) if not ablation_pc.empty else pd.DataFrame()
    return StudyResults(
        plan, recipe, winner, sizes, summaries, pending, per_case, summary, pd.DataFrame(comparisons), drops,
        ablation_table, plan.subsets(plan.sweep(recipe)) if recipe else {}, unplanned, by_set, by_family,
        ablation_pc,
    )
