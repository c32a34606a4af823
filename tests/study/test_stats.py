"""study/stats.py: the study's selection and statistics on hand-made per-case tables with known answers.

* the recipe ablation ranks on the validation split only (validation and test disagree here);
* the paired Wilcoxon test pairs test cases (8 cases, mixed signs: re-pairing changes p);
* the summary table and the training subsets, by hand.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from globalmask.study import paired_comparison, recipe_ablation, summary_table


def exact_wilcoxon_p(diffs) -> float:
    """Exact two-sided signed-rank p by enumerating all 2^n sign patterns (no ties, no zeros)."""
    mags = [abs(d) for d in diffs]
    assert len(set(mags)) == len(mags) and min(mags) > 0
    ranks = {m: r for r, m in enumerate(sorted(mags), start=1)}
    r = [ranks[m] for m in mags]
    w_plus = sum(ri for ri, d in zip(r, diffs) if d > 0)
    w = min(w_plus, sum(r) - w_plus)
    n = len(r)
    at_most = sum(1 for signs in itertools.product((0, 1), repeat=n) if sum(ri for ri, s in zip(r, signs) if s) <= w)
    return min(1.0, 2 * at_most / 2**n)


# ----------------------------------------------------------------------------------------------
# paired comparison

A = [0.80, 0.75, 0.60, 0.85, 0.70, 0.55, 0.90, 0.65]  # mode a, per test case (mean over draws)
D = [0.08, 0.07, -0.01, 0.06, 0.05, -0.02, 0.04, 0.03]  # a - b: six up, two down
B = [a - d for a, d in zip(A, D)]
CASES = [f"t{i}" for i in range(8)]


def comparison_table(b_for_case=None) -> pd.DataFrame:
    """Two draws of each mode on 8 test cases, plus rows the comparison must ignore."""
    b_for_case = b_for_case or dict(zip(CASES, B))
    base = {"recipe": "bone", "size": "2", "subset": "test", "shift": "none", "status": "ok", "structure": "heart"}
    rows = []
    for draw, jitter in ((0, 0.01), (1, -0.01)):  # a's draws differ; their mean per case is A
        for case, a in zip(CASES, A):
            rows.append({**base, "mode": "ct+gbm", "draw": draw, "case": case, "dice": a + jitter})
            rows.append({**base, "mode": "ct", "draw": draw, "case": case, "dice": b_for_case[case]})
    # distractors: validation, shifted, another size, another mode, absent structures
    for case in CASES:
        for mode in ("ct+gbm", "ct"):
            rows.append({**base, "mode": mode, "draw": 0, "case": case, "dice": 0.0 if mode == "ct+gbm" else 1.0,
                         "subset": "validation"})
            rows.append({**base, "mode": mode, "draw": 0, "case": case, "dice": 0.0 if mode == "ct+gbm" else 1.0,
                         "shift": "shifted"})
            rows.append({**base, "mode": mode, "draw": 0, "case": case, "dice": 0.0 if mode == "ct+gbm" else 1.0,
                         "size": "4"})
            rows.append({**base, "mode": mode, "draw": 0, "case": case, "dice": float("nan"), "structure": "lung",
                         "status": "absent"})
        rows.append({**base, "mode": "gbm", "draw": 0, "case": case, "dice": 0.0})
    return pd.DataFrame(rows)


def test_paired_comparison_of_eight_cases_with_mixed_signs():
    c = paired_comparison(comparison_table(), "ct+gbm", "ct", "2")
    # |a - b| ranks 1..8 are 0.01, 0.02, ..., 0.08: W- = 1 + 2 = 3, and 5 of the 256 sign
    # patterns have a rank sum <= 3 ({}, {1}, {2}, {3}, {1,2}): p = 2 x 5 / 256
    assert c["wilcoxon_p"] == pytest.approx(10 / 256, abs=1e-12)
    assert exact_wilcoxon_p(D) == 10 / 256
    assert c["n_cases"] == 8 and c["n_pairs"] == 16 and c["cases_a_better"] == 6
    mean_a, mean_b = sum(A) / 8, sum(B) / 8  # 0.725 and 0.6875
    assert c["dice_a"] == pytest.approx(0.725) and c["dice_b"] == pytest.approx(0.6875)
    assert c["relative_improvement_pct"] == pytest.approx((mean_a - mean_b) / mean_b * 100)  # 5.4545...%
    assert c["relative_improvement_pct"] == pytest.approx(100 * 0.0375 / 0.6875)


def test_pairing_matters_re_pairing_the_cases_changes_p():
    """The same Dice values of mode b, assigned to other cases: the p-value must change."""
    rolled = dict(zip(CASES, B[-1:] + B[:-1]))  # case i gets b of case i-1
    c = paired_comparison(comparison_table(rolled), "ct+gbm", "ct", "2")
    diffs = [a - rolled[case] for case, a in zip(CASES, A)]
    # |d| = .18 .03 .08 .24 .09 .10 .33 .21 -> W- = 2+3+4+6 = 15, W+ = 21: p = 2 x 95 / 256
    assert exact_wilcoxon_p(diffs) == pytest.approx(190 / 256)
    assert c["wilcoxon_p"] == pytest.approx(190 / 256, abs=1e-12)
    assert c["dice_a"] == pytest.approx(0.725) and c["dice_b"] == pytest.approx(0.6875)  # means unchanged
    assert c["cases_a_better"] == 4


def test_paired_comparison_record_and_recipe_filter():
    table = comparison_table()
    other = table[table["recipe"] == "bone"].assign(recipe="body", dice=0.5)  # another recipe: all 0.5
    both = pd.concat([table, other])
    c = paired_comparison(both, "ct+gbm", "ct", "2", recipe="bone")
    assert {k: c[k] for k in ("a", "b", "size", "structure")} == {"a": "ct+gbm", "b": "ct", "size": "2",
                                                                  "structure": "all"}
    assert c["dice_a"] == pytest.approx(0.725) and c["n_pairs"] == 16
    flat = paired_comparison(both, "ct+gbm", "ct", "2", recipe="body")
    assert flat["dice_a"] == flat["dice_b"] == 0.5 and flat["wilcoxon_p"] == 1.0
    assert paired_comparison(table, "ct+gbm", "ct", "2", structure="heart")["structure"] == "heart"


def test_paired_comparison_edge_cases():
    from globalmask.errors import GlobalmaskError

    table = comparison_table()
    assert paired_comparison(table, "ct+coords", "ct", "2") == {}  # a mode that was not run
    assert paired_comparison(table, "ct", "ct+coords", "2") == {}
    unpaired = table[~((table["mode"] == "ct") & (table["case"] == "t0") & (table["subset"] == "test"))]
    with pytest.raises(GlobalmaskError, match="ct\\+gbm and ct at size 2 are not paired"):
        paired_comparison(unpaired, "ct+gbm", "ct", "2")
    # two cases, both better: the exact two-sided p is 2 x 1/4 = 0.5, not the 'no test' 1.0
    two = table[table["case"].isin(["t0", "t1"])]
    assert paired_comparison(two, "ct+gbm", "ct", "2")["wilcoxon_p"] == pytest.approx(0.5)
    # a baseline scoring zero everywhere: the relative improvement is infinite, not an error
    zero = table.assign(dice=np.where(table["mode"] == "ct", 0.0, table["dice"]))
    assert paired_comparison(zero, "ct+gbm", "ct", "2")["relative_improvement_pct"] == float("inf")


def test_paired_comparison_of_one_structure_and_identical_modes():
    table = comparison_table()
    assert paired_comparison(table, "ct+gbm", "ct", "2", structure="lung") == {}  # only absent rows
    same = table[table["mode"] == "ct"].assign(mode="gbm")
    c = paired_comparison(pd.concat([table[table["mode"] == "ct"], same]), "gbm", "ct", "2")
    assert c["wilcoxon_p"] == 1.0 and c["cases_a_better"] == 0 and c["relative_improvement_pct"] == 0.0


# ----------------------------------------------------------------------------------------------
# recipe choice


def ablation_table() -> pd.DataFrame:
    """Three recipes whose validation and test rankings disagree, plus rows that must not count.

    validation (2 cases x 2 structures):  test:
      body        0 missed, CoM 3.0, Dice 0.60   CoM 9.0, Dice 0.30
      bone        0 missed, CoM 4.0, Dice 0.70   CoM 1.0, Dice 0.95  (best on test)
      threshold   1 missed, CoM 1.0, Dice 0.90   CoM 1.0, Dice 0.95
    """
    base = {"mode": "gbm", "size": "all", "shift": "none"}
    spec = {
        ("body", "validation"): ([0.5, 0.7, 0.6, 0.6], [2.0, 4.0, 3.0, 3.0], 0),
        ("body", "test"): ([0.3] * 4, [9.0] * 4, 0),
        ("bone", "validation"): ([0.7] * 4, [4.0] * 4, 0),
        ("bone", "test"): ([0.95] * 4, [1.0] * 4, 0),
        ("threshold", "validation"): ([0.9, 0.9, 0.9, 0.0], [1.0, 1.0, 1.0, float("nan")], 1),
        ("threshold", "test"): ([0.95] * 4, [1.0] * 4, 0),
    }
    rows = []
    for (recipe, subset), (dice, com, missed) in spec.items():
        for k, (d, c) in enumerate(zip(dice, com)):
            status = "missed" if k >= 4 - missed else "ok"
            rows.append({**base, "recipe": recipe, "subset": subset, "case": f"c{k // 2}", "structure": f"s{k % 2}",
                         "dice": d, "com_mm": c, "status": status})
        # an absent structure with a misleading score, not counted
        rows.append({**base, "recipe": recipe, "subset": subset, "case": "c0", "structure": "s9", "dice": 1.0,
                     "com_mm": 0.0, "status": "absent"})
    # other modes, sizes and shifted evaluations where 'threshold' would look perfect on validation
    for extra in ({"mode": "ct"}, {"size": "2"}, {"shift": "shifted"}):
        rows.append({**base, "recipe": "threshold", "subset": "validation", "case": "c0", "structure": "s1",
                     "dice": 1.0, "com_mm": 0.0, "status": "ok", **extra})
        rows.append({**base, "recipe": "body", "subset": "validation", "case": "c0", "structure": "s1", "dice": 0.0,
                     "com_mm": 99.0, "status": "missed", **extra})
    return pd.DataFrame(rows)


def test_recipe_ranking_uses_validation_only():
    table = recipe_ablation(ablation_table())
    # fewest validation misses first (threshold has one), then lowest validation CoM (body 3.0 <
    # bone 4.0) - although bone is the best on test and threshold has the lowest CoM overall
    assert list(table["recipe"]) == ["body", "bone", "threshold"]
    row = table.set_index("recipe")
    assert row.loc["body", "validation_com_mm"] == pytest.approx(3.0)
    assert row.loc["body", "validation_dice"] == pytest.approx(0.6)
    assert row.loc["threshold", "validation_missed"] == 1
    assert row.loc["threshold", "validation_com_mm"] == pytest.approx(1.0)
    assert row.loc["threshold", "validation_dice"] == pytest.approx(2.7 / 4)  # the miss counts as 0
    assert row.loc["bone", "test_dice"] == pytest.approx(0.95) and row.loc["bone", "test_com_mm"] == pytest.approx(1.0)
    assert row.loc["body", "test_missed"] == 0
    assert list(table.columns) == ["recipe", "validation_dice", "validation_com_mm", "validation_missed", "test_dice",
                                   "test_com_mm", "test_missed"]
    assert list(table.index) == [0, 1, 2]


def test_choose_recipe_is_the_validation_winner_and_needs_gbm_results():
    from globalmask.errors import GlobalmaskError
    from globalmask.study.stats import choose_recipe

    assert choose_recipe(ablation_table()) == "body"  # not bone, the test split's best
    no_gbm = ablation_table().assign(mode="ct")
    with pytest.raises(GlobalmaskError, match="no GBM-only full-size validation results"):
        choose_recipe(no_gbm)


def test_paired_comparison_counts_draws_and_pairs():
    c = paired_comparison(comparison_table(), "ct+gbm", "ct", "2")
    assert c["n_draws"] == 2 and c["n_pairs"] == 16  # 2 draws x 8 test cases; distractor rows ignored


def test_recipe_ties_break_on_validation_dice():
    """Equal misses and equal CoM: the higher validation Dice wins, whatever the test says."""
    rows = []
    for recipe, val_dice, test_dice in (("otsu", 0.6, 0.99), ("body", 0.8, 0.10)):
        for subset, d in (("validation", val_dice), ("test", test_dice)):
            rows.append({"mode": "gbm", "size": "all", "shift": "none", "recipe": recipe, "subset": subset,
                         "case": "c0", "structure": "s", "dice": d, "com_mm": 2.0, "status": "ok"})
    assert list(recipe_ablation(pd.DataFrame(rows))["recipe"]) == ["body", "otsu"]


# ----------------------------------------------------------------------------------------------
# summary and subsets


def test_summary_table_by_hand():
    rows = []
    for case, (dh, dl, st) in {"c0": (0.8, 0.4, "ok"), "c1": (0.6, 0.0, "missed"),
                               "c2": (0.7, float("nan"), "absent")}.items():
        rows.append({"recipe": "bone", "mode": "gbm", "size": "all", "subset": "test", "shift": "none", "case": case,
                     "structure": "lung", "dice": dl, "com_mm": float("nan") if st != "ok" else 6.0,
                     "hd95_mm": float("nan") if st != "ok" else 8.0, "status": st})
        rows.append({"recipe": "bone", "mode": "gbm", "size": "all", "subset": "test", "shift": "none", "case": case,
                     "structure": "heart", "dice": dh, "com_mm": 1.0 + int(case[1]), "hd95_mm": 4.0, "status": "ok"})
    rows.append({**rows[-1], "mode": "ct", "dice": 0.1})  # another group, listed after the first
    full = summary_table(pd.DataFrame(rows))
    assert list(zip(full["mode"], full["structure"])) == [("gbm", "lung"), ("gbm", "heart"), ("gbm", "all"),
                                                          ("ct", "heart"), ("ct", "all")]
    s = full[full["mode"] == "gbm"].set_index("structure")
    assert s.loc["heart", "com_mm_mean"] == pytest.approx(2.0)  # 1, 2, 3
    assert s.loc["heart", "com_mm_std"] == pytest.approx(1.0)
    assert s.loc["heart", "n"] == 3 and s.loc["heart", "dice_mean"] == pytest.approx(0.7)
    assert s.loc["heart", "dice_std"] == pytest.approx(0.1)  # sample std of 0.8, 0.6, 0.7
    assert s.loc["lung", "n"] == 2 and s.loc["lung", "missed"] == 1  # the absent case is not scored
    assert s.loc["lung", "dice_mean"] == pytest.approx(0.2)
    assert s.loc["lung", "dice_std"] == pytest.approx(math.sqrt(0.08))
    assert s.loc["all", "n"] == 5 and s.loc["all", "missed"] == 1
    assert s.loc["all", "dice_mean"] == pytest.approx(2.5 / 5)
    assert s.loc["all", "com_mm_mean"] == pytest.approx((1.0 + 2.0 + 3.0 + 6.0) / 4)
    assert s.loc["all", "hd95_mm_mean"] == pytest.approx((4.0 * 3 + 8.0) / 4)
    assert s.loc["all", "hd95_mm_std"] == pytest.approx(2.0)


def test_paired_comparison_by_hand():
    """Two modes, three test cases, one structure, two draws: numbers checked by hand."""
    rows = []
    for draw in (0, 1):
        for case, (da, db) in zip(("p1", "p2", "p3"), ((0.8, 0.6), (0.7, 0.5), (0.9, 0.4))):
            for mode, d in (("ct+gbm", da + 0.01 * draw), ("ct", db)):
                rows.append({"kind": "sweep", "subset": "test", "shift": "none", "size": "2", "status": "ok",
                             "mode": mode, "draw": draw, "case": case, "structure": "heart", "dice": d})
    c = paired_comparison(pd.DataFrame(rows), "ct+gbm", "ct", "2")
    mean_a = np.mean([0.8, 0.7, 0.9, 0.81, 0.71, 0.91])
    mean_b = np.mean([0.6, 0.5, 0.4])
    assert c["dice_a"] == pytest.approx(mean_a) and c["dice_b"] == pytest.approx(mean_b)
    assert c["relative_improvement_pct"] == pytest.approx((mean_a - mean_b) / mean_b * 100)
    assert c["n_cases"] == 3 and c["cases_a_better"] == 3
    assert c["wilcoxon_p"] == pytest.approx(0.25)  # exact two-sided p for n=3, all positive


def test_the_robust_recipe_rule_on_a_hand_made_table():
    """Clean and worst-case Dice per recipe (benchmarks/robustness/README.md): 'sharp' is best clean
    but breaks under voltage; 'steady' is within 0.03 clean and the best worst case; 'flat' is the
    most robust but too poor clean to be eligible."""
    from globalmask.errors import GlobalmaskError
    from globalmask.study.stats import choose_recipe, robust_choice

    dice = pd.DataFrame(
        {"none": [0.80, 0.78, 0.70], "voltage-80kVp": [0.60, 0.75, 0.70], "pose-setup": [0.79, 0.77, 0.70]},
        index=pd.Index(["sharp", "steady", "flat"], name="recipe"),
    )
    winner, table = robust_choice(dice)
    assert winner == "steady"
    assert table.loc["sharp", "worst_drop"] == pytest.approx(0.20)
    assert table.loc["sharp", "worst_variation"] == "voltage-80kVp"
    assert not table.loc["flat", "eligible"] and table.loc["flat", "worst"] == pytest.approx(0.70)
    # a tie within 0.01 of the best worst case goes to the higher clean Dice
    tie = dice.assign(**{"voltage-80kVp": [0.746, 0.75, 0.70]})
    assert robust_choice(tie)[0] == "sharp"
    # the same rule inside the study, from per-case rows (validation only; test rows are ignored)
    rows = []
    for recipe in dice.index:
        for shift in dice.columns:
            for subset, value in (("validation", dice.loc[recipe, shift]), ("test", 1.0 if recipe == "flat" else 0.0)):
                rows.append({"recipe": recipe, "mode": "gbm", "size": "all", "subset": subset, "shift": shift,
                             "case": "c", "structure": "s",
                             "dice": value, "com_mm": 1.0, "status": "ok"})
    per_case = pd.DataFrame(rows)
    assert choose_recipe(per_case, "robust") == "steady"
    with pytest.raises(GlobalmaskError, match="recipe rule"):
        choose_recipe(per_case, "magic")


# ----------------------------------------------------------------------------------------------
# robustness per variation family (issue 28)

#: Two families of the suite: dose (two levels) and metal (one level); the study's shifts as configured.
FAMILY_SHIFTS = [
    {"family": "dose", "name": "dose-half", "level": "half", "dose_fraction": 0.5},
    {"family": "dose", "name": "dose-tenth", "level": "tenth", "dose_fraction": 0.1},
    {"family": "metal", "name": "metal-6-fillings", "level": "6-fillings", "n_inserts": 6},
]
#: Varied Dice per (shift, mode): patient p0, patient p1 (both draws; clean Dice is 0.80 everywhere).
#: Drops per patient (clean - varied) are in the comments; the means are the table's values.
VARIED = {
    ("dose-half", "ct"): (0.70, 0.60),       # 0.10, 0.20 -> 0.15
    ("dose-half", "gbm"): (0.75, 0.65),      # 0.05, 0.15 -> 0.10
    ("dose-half", "ct+gbm"): (0.80, 0.70),   # 0.00, 0.10 -> 0.05
    ("dose-tenth", "ct"): (0.60, 0.50),      # 0.20, 0.30 -> 0.25
    ("dose-tenth", "gbm"): (0.60, 0.60),     # 0.20, 0.20 -> 0.20
    ("dose-tenth", "ct+gbm"): (0.55, 0.55),  # 0.25, 0.25 -> 0.25: equal to CT's, which the target allows
    ("metal-6-fillings", "ct"): (0.80, 0.78),      # 0.00, 0.02 -> 0.01
    ("metal-6-fillings", "gbm"): (None, 0.40),     # p0: 0.35 in draw 0, 0.25 in draw 1 (below); 0.30, 0.40 -> 0.35
    ("metal-6-fillings", "ct+gbm"): (0.79, 0.79),  # 0.01, 0.01 -> 0.01
}


def family_records() -> pd.DataFrame:
    """Three modes at training size 2, two draws, two test patients, one structure; plus rows to ignore."""
    base = {"recipe": "bone", "size": "2", "subset": "test", "status": "ok", "structure": "heart"}
    rows = []
    for mode, draw, case in itertools.product(("ct", "gbm", "ct+gbm"), (0, 1), ("p0", "p1")):
        rows.append({**base, "mode": mode, "draw": draw, "case": case, "shift": "none", "dice": 0.80})
        for s in FAMILY_SHIFTS:
            dice = VARIED[(s["name"], mode)][int(case[1])]
            if dice is None:
                dice = 0.45 if draw == 0 else 0.55
            rows.append({**base, "mode": mode, "draw": draw, "case": case, "shift": s["name"], "dice": dice})
        # to ignore: the validation split, another recipe, an absent structure, a clean external set
        rows.append({**base, "mode": mode, "draw": draw, "case": case, "shift": "dose-half", "dice": 0.0,
                     "subset": "validation"})
        rows.append({**base, "mode": mode, "draw": draw, "case": case, "shift": "dose-half", "dice": 0.0,
                     "recipe": "body"})
        rows.append({**base, "mode": mode, "draw": draw, "case": case, "shift": "dose-half", "dice": float("nan"),
                     "structure": "lung", "status": "absent"})
        rows.append({**base, "mode": mode, "draw": draw, "case": case, "shift": "none", "dice": 0.5, "subset": "ext"})
    return pd.DataFrame(rows)


def test_shift_families_names_family_and_level_only_for_the_suite():
    from globalmask.shift import DEFAULT_SHIFTS
    from globalmask.study.stats import shift_families

    assert shift_families([s.to_dict() for s in DEFAULT_SHIFTS]) == {}  # the old scanner shifts: no family table
    assert shift_families("suite") == {}
    assert shift_families(FAMILY_SHIFTS) == {
        "dose-half": ("dose", "half"), "dose-tenth": ("dose", "tenth"), "metal-6-fillings": ("metal", "6-fillings")}
    mixed = [*FAMILY_SHIFTS[:1], DEFAULT_SHIFTS[0].to_dict()]
    assert shift_families(mixed)["mild"] == ("scanner", "mild")


def test_family_drops_by_hand():
    from globalmask.study.stats import family_drops, shift_families

    drops = family_drops(family_records(), "bone", shift_families(FAMILY_SHIFTS), ["test", "ext"])
    assert set(drops["test_set"]) == {"test"}  # ext has no varied score
    assert list(drops["shift"].drop_duplicates()) == ["dose-half", "dose-tenth", "metal-6-fillings"]
    cell = drops.set_index(["shift", "mode"])
    expected = {("dose-half", "ct"): 0.15, ("dose-half", "gbm"): 0.10, ("dose-half", "ct+gbm"): 0.05,
                ("dose-tenth", "ct"): 0.25, ("dose-tenth", "gbm"): 0.20, ("dose-tenth", "ct+gbm"): 0.25,
                ("metal-6-fillings", "ct"): 0.01, ("metal-6-fillings", "gbm"): 0.35,
                ("metal-6-fillings", "ct+gbm"): 0.01}
    for key, drop in expected.items():
        assert cell.loc[key, "dice_drop"] == pytest.approx(drop), key
        assert cell.loc[key, "dice_clean"] == pytest.approx(0.80)
        assert cell.loc[key, "dice_varied"] == pytest.approx(0.80 - drop)
        assert (cell.loc[key, "n_patients"], cell.loc[key, "n_draws"], cell.loc[key, "size"]) == (2, 2, "2")
    # spread of the per-patient drops: |0.10 - 0.20| / sqrt(2)
    assert cell.loc[("dose-half", "ct"), "drop_sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert cell.loc[("dose-tenth", "gbm"), "drop_sd"] == pytest.approx(0.0, abs=1e-12)
    # GBM under metal, paired by patient against CT: excesses 0.30 - 0.00 and 0.40 - 0.02
    gbm_metal = cell.loc[("metal-6-fillings", "gbm")]
    assert gbm_metal["excess_vs_ref"] == pytest.approx(0.34)
    assert gbm_metal["excess_se"] == pytest.approx(0.08 / math.sqrt(2) / math.sqrt(2))  # std 0.08/sqrt(2), over sqrt(2)
    assert gbm_metal["n_paired"] == 2
    assert math.isnan(cell.loc[("metal-6-fillings", "ct"), "excess_vs_ref"])  # the reference itself


def test_family_verdicts_one_family_holds_one_breaks():
    from globalmask.study.stats import family_drops, family_verdicts, shift_families

    verdicts = family_verdicts(family_drops(family_records(), "bone", shift_families(FAMILY_SHIFTS), ["test"]))
    v = verdicts.set_index("family")
    assert list(verdicts["family"]) == ["dose", "metal"]
    assert v.loc["dose", "verdict"] == "holds" and v.loc["dose", "judged"] == 4 and v.loc["dose", "breaks"] == []
    assert v.loc["metal", "verdict"] == "does not hold" and v.loc["metal", "judged"] == 2
    (b,) = v.loc["metal", "breaks"]
    assert (b["level"], b["mode"], b["size"]) == ("6-fillings", "gbm", "2")
    assert b["dice_drop"] == pytest.approx(0.35) and b["ref_drop"] == pytest.approx(0.01)
    # without CT-only scores nothing is judged
    no_ct = family_records()
    no_ct = no_ct[no_ct["mode"] != "ct"]
    verdicts = family_verdicts(family_drops(no_ct, "bone", shift_families(FAMILY_SHIFTS), ["test"]))
    assert list(verdicts["verdict"]) == ["not judged", "not judged"] and list(verdicts["judged"]) == [0, 0]
