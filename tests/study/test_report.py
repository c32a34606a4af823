"""report.py: the smallest attainable Wilcoxon p-value quoted in the report, checked against scipy;
measured values printed beside a target with enough decimals to tell them apart."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon


@pytest.mark.parametrize("n", [3, 5, 6, 8])
def test_wilcoxon_floor_is_the_smallest_attainable_p(n):
    """All n differences positive is the most extreme outcome; its exact p is the floor the report quotes."""
    from globalmask.study.report import wilcoxon_floor

    assert wilcoxon(np.arange(1, n + 1)).pvalue == pytest.approx(wilcoxon_floor(n))
    assert (wilcoxon_floor(n) < 0.05) == (n >= 6)


@pytest.mark.parametrize("value, target, digits, text", [
    (0.8497, 0.85, 3, "0.8497"),    # rounds to the target at 3 decimals: one more tells them apart
    (0.84996, 0.85, 3, "0.84996"),
    (0.8612, 0.85, 3, "0.861"),     # clearly apart: the usual precision
    (0.85, 0.85, 3, "0.850"),       # equal: reached, nothing to tell apart
    (2.504, 2.5, 2, "2.504"),
])
def test_a_value_beside_its_target_shows_the_decimal_that_decides(value, target, digits, text):
    from globalmask.study.report import against_target

    assert against_target(value, target, digits) == text


def test_the_draw_spread_table_lists_each_draw_in_order_and_its_range():
    from globalmask.study.report import draw_spread_table
    from globalmask.study.stats import RunSummary

    def run(mode, size, draw, dice, role="sweep", recipe="bone:level=250"):
        return RunSummary(f"{mode}-{size}-{draw}", "x", role, mode, recipe, size, draw, [], 10, 20, 5, 0.5, True, 1.0,
                          1.0, dice, "cpu")

    runs = [run("ct", "1", 2, 0.83), run("ct", "1", 0, 0.772), run("ct", "1", 1, 0.789),
            run("gbm", "1", 0, 0.6),
            run("gbm", "all", 0, 0.9, recipe="body:level=-500"),  # another recipe: not this table's
            run("ct", "all", 0, 0.5, role="ablation")]
    table = draw_spread_table(runs, "bone:level=250", ["1", "all"], ["ct", "gbm"], 26)
    assert table.to_dict(orient="records") == [
        {"training cases": "1", "ct": "0.772 / 0.789 / 0.830 (range 0.058)", "gbm": "0.600"},
        {"training cases": "all (26)", "ct": "n/a", "gbm": "n/a"},
    ]
    assert draw_spread_table(runs, "threshold:level=-300", ["1"], ["ct"], 26).empty


@pytest.mark.slow  # merges 47 records and draws the figures: about 20 s
@pytest.mark.parametrize("name", ["openkbp", "thorax"])
def test_a_committed_report_regenerates_from_its_records(name, tmp_path):
    """The committed tables and numbers come back from the committed records alone: per_case.csv and
    summary.csv byte for byte, and every table of report.md (sections added later may be new)."""
    from pathlib import Path

    from globalmask.study import report_from_records

    from .conftest import _tables

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / name
    report_from_records([bench / "records"], tmp_path / "rep")
    for f in ("per_case.csv", "summary.csv"):
        assert (tmp_path / "rep" / f).read_bytes() == (bench / f).read_bytes(), f
    new = _tables(tmp_path / "rep" / "report.md")
    missing = [t for t in _tables(bench / "report.md") if t not in new]
    assert not missing, missing[:1]


def family_results(records, test_sets=("test", "ext"), modes=("ct", "gbm", "ct+gbm")):
    """The parts of StudyResults section 3 reads, for the hand-made records of test_stats.py."""
    from types import SimpleNamespace

    from globalmask.study.stats import family_drops, shift_families

    from .test_stats import FAMILY_SHIFTS

    drops = family_drops(records, "bone", shift_families(FAMILY_SHIFTS), list(test_sets))
    return SimpleNamespace(
        family_drops=drops, sizes=["1", "2", "all"], plan=SimpleNamespace(test_sets=list(test_sets), n_train=26),
        config=SimpleNamespace(modes=list(modes), shifts=FAMILY_SHIFTS, shifts_on_external=False),
    )


def test_the_family_robustness_table_and_its_verdicts():
    """Dose holds (a drop equal to CT-only's included), metal breaks for GBM-only: table and words by hand."""
    from globalmask.study.report import robustness_section

    from .test_stats import family_records

    lines = robustness_section(family_results(family_records()), None)
    text = "\n".join(lines)
    assert lines[0] == "## 3. Robustness to simulated scanner and patient variations"
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table == [
        "| family | level | ct, 2 | gbm, 2 | ct+gbm, 2 |",
        "| dose | half | +0.150 ± 0.071 | +0.100 ± 0.071 | +0.050 ± 0.071 |",
        "| dose | tenth | +0.250 ± 0.071 | +0.200 ± 0.000 | +0.250 ± 0.000 |",
        "| metal | 6-fillings | +0.010 ± 0.014 | +0.350 ± 0.071 | +0.010 ± 0.000 |",
    ]
    assert "### Test set `test` (2 patients)" in lines
    assert "Target per family:" in lines  # heads the verdicts below
    # dose-tenth: CT+GBM drops exactly as much as CT-only, which the target allows
    assert "* **dose: holds** at every level and training size (4 comparisons with CT-only)." in lines
    (metal,) = [line for line in lines if line.startswith("* **metal")]
    assert metal.startswith("* **metal: does not hold** (largest excess over CT-only's drop +0.340) at 6-fillings "
                            "(1 of 2 comparisons with CT-only): "
                            "GBM-only at 6-fillings, 2 training cases: drop +0.350 vs CT-only +0.010; "
                            "paired excess +0.340 ± 0.040 SE over 2 patients. Why: the paired excess is more than "
                            "twice its standard error, so the break is not chance alone; the likely mechanism: metal "
                            "streaks")
    # the external set has clean scores only
    assert "### Test set `ext`" in lines
    assert "Not scored under the variations (the study's `shifts_on_external` is off)." in text


def test_a_family_break_below_a_tenth_of_a_dice_point_is_negligible():
    """Both drops round to 0.050: the decimal that decides is shown, and the break is called negligible
    even where it is more than 2 SE (a tiny but consistent excess)."""
    from globalmask.study.report import family_verdict_line

    verdict = {"family": "pose", "verdict": "does not hold", "judged": 4, "breaks": [
        {"level": "setup", "mode": "ct+gbm", "size": "all", "dice_drop": 0.0497, "ref_drop": 0.0495,
         "excess_vs_ref": 0.0002, "excess_se": 0.00005, "n_paired": 10}]}
    line = family_verdict_line(verdict, 26)
    assert line.startswith("* **pose: does not hold, negligibly** (largest excess over CT-only's drop +0.0002) at "
                           "setup (1 of 4 comparisons with CT-only): CT+GBM at setup, "
                           "all (26) training cases: drop +0.0497 vs CT-only +0.0495; paired excess +0.000 ± 0.000 SE "
                           "over 10 patients. Why: every excess is below 0.001 Dice")
    assert "not chance alone" not in line
    just_below = {**verdict, "breaks": [{**verdict["breaks"][0], "dice_drop": 0.05047}]}  # excess 0.00097
    assert "negligibly** (largest excess over CT-only's drop +0.00097)" in family_verdict_line(just_below, 26)


def test_a_family_break_within_the_spread_between_patients_may_be_chance():
    """An excess of 0.005 with an SE of 0.004 is within 2 SE: said so, with the mechanism if it is real."""
    from globalmask.study.report import family_verdict_line

    verdict = {"family": "pose", "verdict": "does not hold", "judged": 4, "breaks": [
        {"level": "setup", "mode": "ct+gbm", "size": "all", "dice_drop": 0.0547, "ref_drop": 0.0495,
         "excess_vs_ref": 0.005, "excess_se": 0.004, "n_paired": 10}]}
    line = family_verdict_line(verdict, 26)
    assert line.startswith("* **pose: does not hold, within noise** (largest excess over CT-only's drop +0.005) at "
                           "setup (1 of 4 comparisons with CT-only): CT+GBM at setup, "
                           "all (26) training cases: drop +0.055 vs CT-only +0.050; paired excess +0.005 ± 0.004 SE "
                           "over 10 patients. Why: every paired excess is within twice its standard error")
    assert "more patients would tell" in line and "reference labels move with the patient" in line
    nothing = family_verdict_line({"family": "dose", "verdict": "not judged", "judged": 0, "breaks": []}, 26)
    assert nothing.startswith("* **dose: not judged**: no CT-only model")


def test_without_ct_only_scores_no_family_is_judged():
    from globalmask.study.report import robustness_section

    from .test_stats import family_records

    records = family_records()
    lines = robustness_section(family_results(records[records["mode"] != "ct"], modes=("gbm", "ct+gbm")), None)
    assert [line for line in lines if line.startswith("* ")] == [
        "* **not judged yet**: dose, metal: no CT-only model has a score under them at a training size of the other "
        "modes yet."]
    assert "| family | level | gbm, 2 | ct+gbm, 2 |" in "\n".join(lines).splitlines()


@pytest.fixture(scope="module")
def thorax_results():
    """The committed thorax study (47 records), analysed once: about a second."""
    from pathlib import Path

    from globalmask.study import analyse, load_records

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "thorax"
    plan, records = load_records([bench / "records"])
    return analyse(plan, records), (bench / "report.md").read_text(encoding="utf-8")


def test_the_sections_of_a_committed_report_come_back_from_its_records(thorax_results):
    """GBM-only, scarcity (with its draw spread), comparisons, robustness and the paper's table: each section's
    lines stand, in order and unchanged, in the committed report.md."""
    from globalmask.study import report as rep

    results, committed = thorax_results
    sections = [rep.gbm_only_section(results), rep.scarcity_section(results, []), rep.comparisons_section(results),
                rep.robustness_section(results, None), rep.convergence_section(results),
                rep.paper_section(results.summary, results.comparisons, results.config, results.sweep_recipe,
                                  results.plan.n_train)]
    for lines in sections:
        assert len(lines) > 3
        assert "\n".join(lines) in committed, lines[0]


def test_the_learning_curves_and_the_shift_figure_are_drawn_from_the_committed_records(thorax_results, tmp_path):
    results, _ = thorax_results
    from globalmask.study.report import plot_learning_curves, plot_shift

    assert plot_learning_curves(results.per_case, results.plan.n_train, tmp_path, results.sweep_recipe) == [
        "dice_vs_n.png", "com_vs_n.png"]
    assert plot_shift(results.shift_drops, tmp_path) == "shift_drop.png"
    for name in ("dice_vs_n.png", "com_vs_n.png", "shift_drop.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_test_sets_section_claims_in_words_for_ct_gbm_against_ct(thorax_results):
    from globalmask.study.report import claim_words, test_sets_section

    results, _ = thorax_results
    text = "\n".join(test_sets_section(results))
    rows = results.set_comparisons
    c = rows[(rows["a"] == "ct+gbm") & (rows["b"] == "ct")].iloc[0]
    assert f"| {claim_words(c['verdict'], c['size'])} |" in text


def test_without_overlays_the_figures_section_says_how_to_get_them(thorax_results):
    from globalmask.study.report import figures_section

    results, _ = thorax_results
    text = "\n".join(figures_section(results, None, []))
    hint = "(Overlays need the dataset and the run folders' predictions on this machine: `globalmask study report"
    assert hint in text


def test_overlays_are_drawn_from_the_first_draw_with_every_mode_predicted(tmp_path):
    """Draw 0 lacks the ct+gbm prediction, draw 1 has both: the overlay and one QC picture per mode of draw 1.
    The dataset has dataset.json and imagesTr (no ``images`` folder)."""
    import shutil
    from types import SimpleNamespace

    from globalmask.study.report import plot_overlays
    from globalmask.study.stats import RunSummary

    from ..conftest import make_tiny_dataset

    root = make_tiny_dataset(tmp_path / "ds", n=2)
    runs_dir = tmp_path / "runs"
    runs = []
    for draw in (0, 1):
        for mode in ("ct", "ct+gbm"):
            name = f"{mode}-all-d{draw}"
            runs.append(RunSummary(name, name, "sweep", mode, "bone:level=250", "all", draw, [], 1, 1, 1, 0.5, True,
                                   1.0, 1.0, 0.5, "cpu"))
            if (draw, mode) != (0, "ct+gbm"):
                (runs_dir / name / "predictions").mkdir(parents=True)
                shutil.copy(root / "labelsTr" / "case_001.nii.gz", runs_dir / name / "predictions" / "case_001.nii.gz")
    results = SimpleNamespace(sweep_recipe="bone:level=250", runs=runs,
                              plan=SimpleNamespace(dataset_root=str(root), split=SimpleNamespace(test=("case_001",))))
    out = tmp_path / "rep"
    out.mkdir()
    names = plot_overlays(runs_dir, results, 1, out)
    assert names == ["overlay_case_001.png", "qc_case_001_ct.png", "qc_case_001_ct_gbm.png"]
    assert all((out / n).is_file() for n in names)
    shutil.rmtree(runs_dir / "ct-all-d1")  # no draw complete now: nothing drawn
    assert plot_overlays(runs_dir, results, 1, out) == []


def test_under_the_robust_rule_the_ablation_shows_each_recipe_under_the_variation_suite():
    """The committed openkbp_native records (robust rule): clean, worst and worst drop to 3 decimals, the drop
    being clean minus worst, and the recipe marked chosen is the winner named below the table."""
    import re
    from pathlib import Path

    from globalmask.study import analyse, load_records
    from globalmask.study.report import ablation_section

    plan, records = load_records([Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp_native" / "records"])
    lines = ablation_section(analyse(plan, records))
    start = lines.index("Under the variation suite (validation, mean Dice; a miss scores 0):")
    head, _, *rows = lines[start + 2].splitlines()
    assert head == "| recipe | clean | worst | worst_variation | worst_drop | eligible | chosen |"
    assert len(rows) == 4
    for row in rows:
        recipe, clean, worst, _, drop, _, chosen = row.strip("| ").split(" | ")
        assert all(re.fullmatch(r"\d\.\d{3}", v) for v in (clean, worst, drop)), row
        assert float(drop) == pytest.approx(float(clean) - float(worst), abs=0.0011)
        if chosen == "True":
            assert f"Winner on validation: `{recipe}`; the sweep above used `{recipe}`." in lines


def test_the_recipe_tables_read_the_ablation_runs_only_not_the_sweeps_later_draws():
    """Stage 1 (draw 0) ranks bone (clean 0.74, worst 0.70) over percentile (0.72, 0.69); the sweep's draw 1 of
    bone (clean 0.50, worst 0.40) is later evidence of one recipe only. Pooled in, it would put bone at 0.62/0.55
    and hand the table's choice to percentile while the winner line (and the sweep) say bone."""
    from globalmask.study import ALL, StudyConfig, _bare_plan, analyse
    from globalmask.study.records import RunRecord
    from globalmask.study.report import ablation_section

    cfg = StudyConfig(modes=["gbm"], train_sizes=[ALL], draws=2, recipe="auto", recipe_rule="robust",
                      ablation_recipes=["bone", "percentile"], shifts=[])
    plan = _bare_plan(cfg, 3)

    def record(run, clean, worst):
        rows = [{"subset": subset, "shift": shift, "case": "v", "structure": "a", "label": 1, "dice": dice,
                 "com_mm": 1.0, "hd95_mm": 1.0, "msd_mm": 1.0, "pred_ml": 1.0, "ref_ml": 1.0, "status": "ok"}
                for subset in ("validation", "test") for shift, dice in (("none", clean), ("pose", worst))]
        return RunRecord(plan={"plan_hash": plan.hash}, run_id=plan.run_id(run), run=run, train_config={},
                         train_ids=["t0", "t1", "t2"], steps=10, max_steps=10, best_step=10, best_val_dice=clean,
                         converged=True, stop_reason="plateau", train_seconds=1.0, total_seconds=1.0, machine={},
                         metrics=rows)

    bone, percentile = sorted(plan.ablation(), key=lambda r: r.recipe)
    later = next(r for r in plan.sweep(bone.recipe) if r.draw == 1)
    records = {plan.run_id(r): record(r, clean, worst)
               for r, clean, worst in ((bone, 0.74, 0.70), (percentile, 0.72, 0.69), (later, 0.50, 0.40))}
    results = analyse(plan, records)
    lines = ablation_section(results)
    assert results.recipe_winner == results.sweep_recipe == bone.recipe
    assert f"| {bone.recipe} | 0.740 | 0.700 | pose | 0.040 | True | True |" in "\n".join(lines)
    assert results.recipe_ablation.set_index("recipe").loc[bone.recipe, "validation_dice"] == pytest.approx(0.74)


def test_the_overlay_shows_the_middle_slice_of_the_first_structure(tmp_path, monkeypatch):
    """The first structure (``left``, 1) of the test case lies on slices 2-4 only: the overlay's panels show axial
    slice 3 (its mean slice), not the volume's middle (10 of 20), and its title says so."""
    import shutil
    from types import SimpleNamespace

    from globalmask.io import Volume, read_volume, write_volume
    from globalmask.study import report as rep
    from globalmask.study.stats import RunSummary

    from ..conftest import make_tiny_dataset

    root = make_tiny_dataset(tmp_path / "ds", n=2)
    lab_path = root / "labelsTr" / "case_001.nii.gz"
    lab = read_volume(lab_path)
    arr = np.zeros_like(lab.array)
    arr[6:10, 8:12, 2:5] = 1  # left: slices 2, 3, 4
    arr[14:18, 8:12, 5:15] = 2
    write_volume(Volume(arr, lab.affine), lab_path)
    runs_dir = tmp_path / "runs"
    (runs_dir / "ct-all-d0" / "predictions").mkdir(parents=True)
    shutil.copy(lab_path, runs_dir / "ct-all-d0" / "predictions" / "case_001.nii.gz")
    runs = [RunSummary("ct-all-d0", "ct-all-d0", "sweep", "ct", "bone:level=250", "all", 0, [], 1, 1, 1, 0.5, True,
                       1.0, 1.0, 0.5, "cpu")]
    results = SimpleNamespace(sweep_recipe="bone:level=250", runs=runs,
                              plan=SimpleNamespace(dataset_root=str(root), split=SimpleNamespace(test=("case_001",))))
    figures = {}
    save = rep._savefig
    monkeypatch.setattr(rep, "_savefig", lambda fig, path: (figures.setdefault(path.name, fig), save(fig, path)))
    out = tmp_path / "rep"
    out.mkdir()
    assert rep.plot_overlays(runs_dir, results, 1, out)[0] == "overlay_case_001.png"
    fig = figures["overlay_case_001.png"]
    assert fig._suptitle.get_text().startswith("case_001, axial slice 3, full-size models of draw 0")
    ct = read_volume(root / "imagesTr" / "case_001_0000.nii.gz").array
    shown = np.asarray(fig.axes[0].images[0].get_array())  # the CT panel
    np.testing.assert_array_equal(shown, np.clip(ct[:, :, 3].T, -400, 600))


def test_the_learning_curves_plot_each_modes_mean_over_draws_against_training_cases(tmp_path, monkeypatch):
    """Per mode, a point per training size at the mean over draws of each draw's mean (two draws of Dice 0.4 and
    0.6 at 1 case: 0.5; ``all`` at the training split's size), axes labelled with what they show."""
    import pandas as pd

    from globalmask.study import report as rep

    rows = []
    for mode, base in (("ct", 0.4), ("ct+gbm", 0.5)):
        for size, extra in (("1", 0.0), ("all", 0.3)):
            for draw, d in ((0, -0.1), (1, 0.1)):
                for case, c in (("a", -0.05), ("b", 0.05)):
                    rows.append(dict(recipe="bone:level=250", subset="test", shift="none", status="scored", mode=mode,
                                     size=size, draw=draw, case=case, dice=base + extra + d + c, com_mm=2.0 + d))
    rows.append(dict(rows[0], subset="validation", dice=0.0))  # not a test case: left out
    per_case = pd.DataFrame(rows)
    figures = {}
    monkeypatch.setattr(rep, "_savefig", lambda fig, path: figures.setdefault(path.name, fig))
    assert rep.plot_learning_curves(per_case, 8, tmp_path, "bone:level=250") == ["dice_vs_n.png", "com_vs_n.png"]
    ax = figures["dice_vs_n.png"].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("training cases", "Dice (test, mean over cases and structures)")
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["ct"].get_xdata(), [1, 8])
    np.testing.assert_allclose(lines["ct"].get_ydata(), [0.4, 0.7])
    np.testing.assert_allclose(lines["ct+gbm"].get_ydata(), [0.5, 0.8])
    ax = figures["com_vs_n.png"].axes[0]
    assert ax.get_ylabel() == "centre-of-mass error (mm)"
    np.testing.assert_allclose({line.get_label(): line for line in ax.get_lines()}["ct"].get_ydata(), [2.0, 2.0])


def test_the_papers_claim_of_ct_gbm_over_ct_needs_a_higher_dice_and_p_below_005():
    """A tie in mean Dice is no improvement however small p is; p = 0.05 exactly is not below 0.05."""
    from types import SimpleNamespace

    import pandas as pd

    from globalmask.study.report import paper_section

    def comp(size, dice_a, dice_b, p):
        return dict(a="ct+gbm", b="ct", structure="all", size=size, dice_a=dice_a, dice_b=dice_b, wilcoxon_p=p,
                    relative_improvement_pct=100 * (dice_a - dice_b) / dice_b, n_cases=8)

    config = SimpleNamespace(reference="heart", reference_structure=None)

    def verdicts(comps):
        lines = paper_section(pd.DataFrame(), pd.DataFrame(comps), config, "bone:level=250", 12)
        return [ln.split(":")[0] for ln in lines if "CT+GBM better than CT" in ln]

    assert verdicts([comp("1", 0.8, 0.8, 0.01), comp("2", 0.81, 0.8, 0.01)]) == ["* **not reached**",
                                                                                  "* **reached**"]
    assert verdicts([comp("1", 0.9, 0.8, 0.05), comp("2", 0.8, 0.9, 0.001)]) == ["* **not reached**",
                                                                                  "* **not reached**"]


def test_the_compute_table_sums_wall_time_times_threads_per_stage_and_counts_short_totals_at_training_time():
    """Hand-computed: two one-thread CPU runs of 1 h training (one with a 1.5 h total, one whose total
    was recorded below its training time), a two-thread ablation run of 0.5 h and a GPU run of 0.25 h."""
    from globalmask.study.report import compute_section, compute_table
    from globalmask.study.stats import RunSummary

    def run(role, train_s, total_s, device="cpu", threads=1):
        return RunSummary("r", "x", role, "ct", "bone:level=250", "1", 0, [], 10, 20, 5, 0.5, True, train_s,
                          total_s, 0.7, device, threads)

    runs = [run("sweep", 3600, 5400), run("sweep", 3600, 600), run("ablation", 1800, 1800, threads=2),
            run("sweep", 900, 1800, device="cuda")]
    tab = compute_table(runs).set_index(["stage", "device"])
    assert tab.loc[("sweep", "cpu"), "models"] == 2
    assert tab.loc[("sweep", "cpu"), "train_h"] == pytest.approx(2.0)
    assert tab.loc[("sweep", "cpu"), "total_h"] == pytest.approx(1.5 + 1.0)  # the short total counts as 1 h
    assert tab.loc[("sweep", "cpu"), "short"] == 1
    assert tab.loc[("ablation", "cpu"), "train_h"] == pytest.approx(1.0)  # 0.5 h x 2 threads
    assert tab.loc[("all", "cpu"), "total_h"] == pytest.approx(3.5)
    assert tab.loc[("all", "cpu"), "per_model_h"] == pytest.approx(3.5 / 3)
    assert tab.loc[("all", "cuda"), "total_h"] == pytest.approx(0.5)  # an accelerator's hours are wall hours

    from types import SimpleNamespace

    text = "\n".join(compute_section(SimpleNamespace(runs=runs)))
    assert "**3 models on `cpu`: 3.5 CPU-hours** in all (3.0 of training" in text
    assert "**1 model on `cuda`: 0.5 cuda hours**" in text
    assert "1 record(s) state a total below their training time" in text
    assert compute_section(SimpleNamespace(runs=[])) == []


def test_each_run_summary_carries_its_records_torch_threads():
    """CPU-hours multiply by the threads a record names (the native study holds a two-thread record)."""
    from pathlib import Path

    from globalmask.study import analyse, load_records

    records = Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp_native" / "records"
    plan, recs = load_records([records])
    threads = {r.run_id: r.threads for r in analyse(plan, recs).runs}
    assert threads == {rid: rec.machine["threads"] for rid, rec in recs.items()}
    assert threads["gbm-nall-d0-percentile_q90-b203c83dc0"] == 2 and 1 in threads.values()


def test_a_study_without_the_plateau_rule_or_variations_says_so_in_its_protocol():
    """The committed re-measurement (patience null, no shifts): its protocol must not claim a plateau rule nor
    list an empty variation suite, and its training section says every model ran to its maximum."""
    from pathlib import Path

    from globalmask.study import analyse, load_records
    from globalmask.study import report as rep

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "openkbp_native" / "annealed"
    results = analyse(*load_records([bench / "records"]))
    header = "\n".join(rep.header_section(results, None))
    assert "* Training runs to the maximum number of steps (no plateau rule);" in header
    assert "validated plateau" not in header and "* Robustness:" not in header
    training = "\n".join(rep.convergence_section(results))
    assert "**No plateau rule: every model ran to its maximum number of steps**" in training
    assert "models converged" not in training and "not judged" not in training
