"""The README and docs/: the results table matches the committed reports, CI runs the README's
test command verbatim, and every relative link resolves."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _table(text: str, first_header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def _results(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / name / "results.json").read_text(encoding="utf-8"))


def _summary(res: dict, mode: str, structure: str) -> dict:
    key = (mode, structure, "all", "none", res["sweep_recipe"])
    rows = [r for r in res["summary"] if (r["mode"], r["structure"], str(r["size"]), r["shift"], r["recipe"]) == key
            and r.get("subset", "test") == "test"]
    assert len(rows) == 1, (mode, structure)
    return rows[0]


def _comparisons(res: dict, sizes: list[str]) -> list[dict]:
    return [
        c
        for c in res["comparisons"]
        if (c["a"], c["b"], c["structure"]) == ("ct+gbm", "ct", "all") and str(c["size"]) in sizes
    ]


def _expected_cells(res: dict, brain: str) -> dict[str, str]:
    gbm, ct, gbm_all = _summary(res, "gbm", brain), _summary(res, "ct", "all"), _summary(res, "gbm", "all")
    small = _comparisons(res, ["1", "2", "4", "8"])
    pcts = sorted(c["relative_improvement_pct"] for c in small)
    p_floor = math.floor(min(c["wilcoxon_p"] for c in small) * 100) / 100
    (full,) = _comparisons(res, ["all"])
    return {
        "test cases, training cases (all)": f"{res['n_test']}, {res['n_train']}",
        "GBM-only Dice, brain (brainstem) / heart structure": f"{gbm['dice_mean']:.3f} ± {gbm['dice_std']:.3f}",
        "GBM-only CoM error, brain / heart structure": f"{gbm['com_mm_mean']:.2f} ± {gbm['com_mm_std']:.2f} mm",
        "CT+GBM over CT, 1-8 training cases": f"{pcts[0]:+.1f}% to {pcts[-1]:+.1f}%, no p below {p_floor:.2f}",
        "CT+GBM over CT, all training cases": f"{full['relative_improvement_pct']:+.1f}%, p = {full['wilcoxon_p']:.3f}",
        "CT-only mean Dice over 5 structures, all training cases": f"{ct['dice_mean']:.3f} ± {ct['dice_std']:.3f}",
        "GBM-only mean Dice over 5 structures, all training cases": (
            f"{gbm_all['dice_mean']:.3f} ± {gbm_all['dice_std']:.3f}"
        ),
    }


def test_readme_results_table_is_the_committed_reports():
    rows = _table(README.read_text(encoding="utf-8"), "test split")
    expected = {
        "openkbp": _expected_cells(_results("openkbp"), "brainstem"),
        "thorax": _expected_cells(_results("thorax"), "heart"),
        "thorax_varied": _expected_cells(_results("thorax_varied/report"), "heart"),
    }
    assert [r[0] for r in rows] == list(expected["openkbp"])
    for row in rows:
        assert row[2] == expected["openkbp"][row[0]], row
        assert row[4] == expected["thorax"][row[0]], row
        assert row[5] == expected["thorax_varied"][row[0]], row
    # the paper's figures and the ceilings are those the committed reports quote
    openkbp_readme = (ROOT / "benchmarks/openkbp/README.md").read_text(encoding="utf-8")
    thorax_readme = (ROOT / "benchmarks/thorax/README.md").read_text(encoding="utf-8")
    for paper, text in (
        ("0.77 ± 0.06", openkbp_readme),
        ("3.12 ± 1.43 mm", openkbp_readme),
        ("+4.3% to +125.3%", openkbp_readme),
        ("0.85 ± 0.04", thorax_readme),
        ("2.5 ± 0.93 mm", thorax_readme),
    ):
        assert paper in text and paper.split(" (")[0] in README.read_text(encoding="utf-8")
    # benchmarks/thorax_varied/README.md repeats the two thorax columns beside the paper's heart figures
    varied_rows = _table((ROOT / "benchmarks/thorax_varied/README.md").read_text(encoding="utf-8"), "test split")
    assert len(varied_rows) == len(rows)
    for row, varied in zip(rows, varied_rows):
        assert varied[2:4] == [row[4], row[5]], varied
    ceilings = [r[3] for r in rows if r[3]]
    assert ceilings == ["0.834", "1.96 mm", "0.818", "0.818"]
    assert "0.834 / 1.96 mm" in openkbp_readme and "0.818" in openkbp_readme


def test_ci_runs_the_readme_test_command_verbatim():
    text = README.read_text(encoding="utf-8")
    command = text.split("# 2. install and run the tests\n", 1)[1].splitlines()[0]
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().splitlines()[-1] == command


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.name}: {target}"


def test_readme_native_headline_is_the_committed_reports_targets():
    """The headline of the study at the data's own grid: the tables `targets.py` prints from the committed
    reports (results.json + per_case.csv.gz) stand in the README line for line, so a README figure cannot
    drift from the records: every target row of `annealed/report` (the full-size models run to their
    maximum, counted with the study they continue) and the CT+GBM vs CT rows of both reports."""
    import importlib.util

    import pandas as pd

    native = ROOT / "benchmarks" / "openkbp_native"
    spec = importlib.util.spec_from_file_location("native_targets", native / "targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def lines(folder, prior=None):
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        per_case = pd.read_csv(module.per_case_file(folder), dtype={"size": str})
        return [ln for ln in module.targets(results, per_case, prior) if ln.startswith("| ")
                and not ln.startswith(("| target", "| training cases"))]

    study = json.loads((native / "report" / "results.json").read_text(encoding="utf-8"))
    annealed = lines(native / "annealed" / "report", prior=study)
    comparisons = [ln for ln in lines(native / "report") if ln.startswith(("| 1 |", "| 2 |", "| 4 |", "| 8 |"))]
    readme = README.read_text(encoding="utf-8").splitlines()
    assert len(annealed) == 9 and len(comparisons) == 4  # 8 targets and the 26-case comparison; sizes 1-8
    assert any("(the study's 48 models)" in ln for ln in annealed)
    for row in annealed[:-1] + comparisons:
        assert row in readme, row
    assert annealed[-1].replace("| all |", "| all, run to 4000 steps |", 1) in readme


def test_the_re_measurement_table_is_what_compare_annealed_prints_from_the_records():
    """benchmarks/openkbp_native/annealed/README.md's per-run and per-mode tables come from the committed
    records of the study and of its re-measurement (compare_annealed.py), line for line."""
    import importlib.util

    here = ROOT / "benchmarks" / "openkbp_native"
    spec = importlib.util.spec_from_file_location("compare_annealed", here / "compare_annealed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    load = module.full_size_records
    lines = module.table(load(here / "annealed" / "records"), load(here / "records"))
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith(("| run ", "| mode "))]
    text = (here / "annealed" / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(rows) >= 12  # 9 runs and 3 modes
    for row in rows:
        assert row in text, row


def test_the_suite6mm_robustness_table_is_what_pooled_drops_prints_from_the_records():
    """benchmarks/openkbp_suite6mm/README.md's pooled table and tally come from the committed
    (gzip-compressed) records through benchmarks/robustness/pooled_drops.py, line for line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "pooled_drops", ROOT / "benchmarks" / "robustness" / "pooled_drops.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drops, patients, sets = module.pooled(ROOT / "benchmarks" / "openkbp_suite6mm" / "records")
    lines, tally = module.table(drops)
    assert patients == 70 and sets == ["test", "Dataset503_OpenKBPHeadNeckExternal"]
    assert len(lines) == 2 + 16 * 2  # 16 variations x 2 training sizes
    text = (ROOT / "benchmarks" / "openkbp_suite6mm" / "README.md").read_text(encoding="utf-8")
    for line in lines:
        assert line in text.splitlines(), line
    assert f"{tally['cells']} cells: lost more by over twice the standard error in {tally['worse']}" in text


def test_the_thorax_varied_phase_table_is_what_phase_seen_prints_from_the_records(tmp_path):
    """benchmarks/thorax_varied/README.md's seen/unseen contrast-phase table comes from the committed
    records and the seed-0 cohort's acquisitions through benchmarks/thorax_varied/phase_seen.py.
    The seen/unseen split is by the cohort's phases: GBM models must lose more on unseen phases there."""
    import importlib.util

    from globalmask.phantom import make_phantom_dataset

    spec = importlib.util.spec_from_file_location(
        "phase_seen", ROOT / "benchmarks" / "thorax_varied" / "phase_seen.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    make_phantom_dataset(tmp_path / "cohort", kind="thorax-varied", cases=20, seed=0, progress=False)
    # every draw; only the sizes 1, 2 and 4 have test cases whose phase no training case had
    table = module.phase_table(ROOT / "benchmarks" / "thorax_varied" / "records", tmp_path / "cohort")
    lines = module.markdown(table)
    assert len(lines) == 2 + 3  # header and the sizes 1, 2, 4
    text = (ROOT / "benchmarks" / "thorax_varied" / "README.md").read_text(encoding="utf-8").splitlines()
    for line in lines:
        assert line in text, line
