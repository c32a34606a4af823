"""Issue 24's targets on the 70 test patients, read from a study report folder (``results.json`` and
``per_case.csv`` written by ``globalmask study report``).

Why a script: the targets pool the test split (10 patients) with the external set (60), a pooling
the report's summary table does not make, and the README's headline must come from the committed
records by a command anyone can repeat:

    globalmask study report benchmarks/openkbp_native/records --out /tmp/native-report
    python benchmarks/openkbp_native/targets.py /tmp/native-report

Full-size figures are means over every (draw, patient, structure) of the sweep recipe's full-size
runs on the unvaried scans; a missed structure scores Dice 0 and has no centre-of-mass error (the
misses are counted beside). A target waits ("pending") until every planned full-size draw of its
mode has a record. The speed target for one model (<= 45 min on 2 quiet cores) is a timing, not a
record: it lives in ``benchmarks/convergence.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from globalmask.study.report import against_target, compute_table
from globalmask.study.stats import RunSummary

FULL = "all"
CPU_HOURS = 40.0
PLATEAU_CHECKS = 5  # the study's patience: a run without the rule counts as settled on the same window


def _verdict(ok: bool | None) -> str:
    return "pending" if ok is None else ("met" if ok else "**not met**")


def pooled_rows(per_case: pd.DataFrame, results: dict[str, Any]) -> pd.DataFrame:
    """The unvaried full-size rows of the sweep recipe on the test split and every external set."""
    sets = ["test", *[e["name"] for e in results.get("external_test") or []]]
    p = per_case
    return p[(p["recipe"] == results["sweep_recipe"]) & (p["size"].astype(str) == FULL) & (p["shift"] == "none")
             & p["subset"].isin(sets)]


def _runs(results: dict[str, Any]) -> list[RunSummary]:
    keys = RunSummary.__dataclass_fields__
    return [RunSummary(**{k: v for k, v in r.items() if k in keys}) for r in results["runs"]]


def _cpu_hours(runs: list[RunSummary]) -> tuple[float, int, str]:
    """CPU-hours of ``runs`` as the report counts them, the records short of their scoring time, and the text."""
    cost = compute_table(runs)
    if cost.empty:
        return 0.0, 0, "0.0 CPU-hours"
    cpu = cost[(cost["stage"] == "all") & (cost["device"] == "cpu")]
    hours = float(cpu["total_h"].sum())
    return hours, int(cpu["short"].sum()), f"{hours:.1f} CPU-hours"


def targets(results: dict[str, Any], per_case: pd.DataFrame, prior: dict[str, Any] | None = None) -> list[str]:
    """Markdown lines: the targets' table, then CT+GBM vs CT per training size on the pooled patients.

    ``prior`` is the ``results.json`` of the study whose runs ``results`` continued (the re-measurement to
    the step maximum): the budget row then counts the whole study, its runs plus what continuing added.
    """
    planned = results["config"].get("full_draws") or results["config"]["draws"]
    rows = pooled_rows(per_case, results)
    patients = rows["case"].nunique()
    lines = [
        f"Plan `{results['plan_hash']}`, recipe `{results['sweep_recipe']}`, {patients} test patients (test split and "
        f"external sets pooled); {len(results['pending'])} run(s) pending.",
        "",
        "| target | measured | draws | verdict |",
        "|---|---|---|---|",
    ]

    def draws(mode: str) -> int:
        return int(rows.loc[rows["mode"] == mode, "draw"].nunique())

    def add(name: str, mode: str, structure: str | None, what: str, target: float, better: str) -> None:
        r = rows[(rows["mode"] == mode) & ((rows["structure"] == structure) if structure else True)]
        n = draws(mode)
        if r.empty:
            lines.append(f"| {name} | - | 0 of {planned} | pending |")
            return
        if what == "missed":
            value, text = float((r["status"] == "missed").sum()), f"{int((r['status'] == 'missed').sum())} missed"
        elif what == "dice":
            value = float(r["dice"].mean())
            per_patient = r.groupby("case")["dice"].mean()
            text = f"{against_target(value, target, 3)} ± {per_patient.std(ddof=1):.3f}"
        else:  # centre-of-mass error of the structures found
            found = r[r["status"] != "missed"]
            value = float(found["com_mm"].mean())
            per_patient = found.groupby("case")["com_mm"].mean()
            text = f"{against_target(value, target, 2)} ± {per_patient.std(ddof=1):.2f} mm"
            if len(found) < len(r):
                text += f" ({len(r) - len(found)} missed)"
        ok = value >= target if better == "high" else value <= target
        lines.append(f"| {name} | {text} | {n} of {planned} | {_verdict(ok if n >= planned else None)} |")

    add("CT only, 26 cases: mean Dice over the 5 structures >= 0.80", "ct", None, "dice", 0.80, "high")
    add("CT only, 26 cases: spinal cord Dice >= 0.78", "ct", "spinal_cord", "dice", 0.78, "high")
    add("CT only, 26 cases: nothing missed", "ct", None, "missed", 0.0, "low")
    add("GBM only, 26 cases: brainstem Dice >= 0.80", "gbm", "brainstem", "dice", 0.80, "high")
    add("GBM only, 26 cases: brainstem centre-of-mass error <= 3.0 mm", "gbm", "brainstem", "com", 3.0, "low")
    add("GBM only, 26 cases: mean Dice over the 5 structures >= 0.75", "gbm", None, "dice", 0.75, "high")

    runs = _runs(results)
    done = not results["pending"]
    if "patience" in results["config"] and results["config"]["patience"] is None and runs:
        # no plateau rule (every run goes to its maximum): a model counts as converged when its best
        # validation came at least PLATEAU_CHECKS checks before the end, the window the rule would wait
        window = PLATEAU_CHECKS * int(results["config"].get("val_every") or 1)
        settled = [r for r in runs if r.max_steps - r.best_step >= window]
        unsettled = ", ".join(f"{r.name} (best at {r.best_step})" for r in runs if r not in settled) or "none"
        lines.append(f"| every model's best validation >= {PLATEAU_CHECKS} checks before its maximum "
                     f"({runs[0].max_steps} steps, no early stop) | {len(settled)} of {len(runs)} "
                     f"(not: {unsettled}) | | {_verdict(len(settled) == len(runs) if done else None)} |")
    else:
        converged = sum(1 for r in runs if r.converged)
        not_converged = ", ".join(r.name for r in runs if not r.converged) or "none"
        lines.append(f"| every model converged under the plateau rule | {converged} of {len(runs)} "
                     f"(not: {not_converged}) | | {_verdict(converged == len(runs) if done else None)} |")
    if prior is None:
        hours, short, text = _cpu_hours(runs)
        text = f"{text} over {len(runs)} models"
    else:  # continuations of the prior study's runs: its cost plus the time they added to each run
        before = {r.name: r for r in _runs(prior)}
        base, short, _ = _cpu_hours(list(before.values()))
        added, _, _ = _cpu_hours(runs)
        added -= _cpu_hours([before[r.name] for r in runs])[0]
        hours = base + added
        text = (f"{base:.1f} (the study's {len(before)} models) + {added:.1f} (continuing {len(runs)} of them) = "
                f"{hours:.1f} CPU-hours")
    if runs:
        note = f", a lower bound: {short} record(s) without their scoring time" if short else ""
        ok = hours <= CPU_HOURS if done else (False if hours > CPU_HOURS else None)  # over budget already: not met
        lines.append(f"| whole study <= {CPU_HOURS:.0f} CPU-hours | {text}{note} | | {_verdict(ok)} |")

    lines += [
        "",
        "CT+GBM vs CT, mean Dice over the 5 structures, paired over the pooled patients (draws averaged per "
        "patient); 95% bootstrap interval over patients and draws:",
        "",
        "| training cases | draws | patients | CT+GBM | CT | relative change (95% CI) | p (Wilcoxon) "
        "| the paper's claim |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in results.get("set_comparisons", []):
        if (c["a"], c["b"], c["test_set"]) == ("ct+gbm", "ct", "pooled"):
            change = f"{c['relative_change_pct']:+.1f}% ({c['ci_low_pct']:+.1f}% to {c['ci_high_pct']:+.1f}%)"
            lines.append(f"| {c['size']} | {c['n_draws']} | {c['n_patients']} | {c['dice_a']:.3f} | "
                         f"{c['dice_b']:.3f} | {change} | {c['wilcoxon_p']:.3g} | {c['verdict']} |")
    return lines


def per_case_file(report: Path) -> Path:
    """The report's ``per_case.csv``, or the gzipped copy committed in its place (the plain file is 9 MB)."""
    plain = report / "per_case.csv"
    return plain if plain.exists() else report / "per_case.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a folder written by `globalmask study report`")
    parser.add_argument("--continues", type=Path, metavar="REPORT",
                        help="the report of the study whose runs this one continued: the budget row counts both")
    args = parser.parse_args()
    results = json.loads((args.report / "results.json").read_text())
    per_case = pd.read_csv(per_case_file(args.report), dtype={"size": str})
    prior = json.loads((args.continues / "results.json").read_text()) if args.continues else None
    print("\n".join(targets(results, per_case, prior)))


if __name__ == "__main__":
    main()
