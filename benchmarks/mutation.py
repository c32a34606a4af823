"""Mutation score of the core modules with mutmut 3, one module at a time (benchmarks/mutation.md).

    .venv/bin/pip install -q "torch==2.13.0" -e ".[test,mutation]"
    nice -n 10 .venv/bin/python benchmarks/mutation.py [MODULE ...] [--out DIR]

For each module the repository's src/, tests/ and pyproject.toml are copied to DIR/<module>
(default /tmp/globalmask-mutation), the [tool.mutmut] section is replaced by one that mutates only
that module and runs only its own fast tests (PLAN below), mutmut generates the mutants, and a
deterministic sample (every k-th mutant of the chosen functions, in source order) is run. The
worktree is never written to. Prints killed / survived / timeout counts and the surviving mutants
with their diffs, the raw material of benchmarks/mutation.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))

# module (dotted below globalmask): (tests mutmut may run for it, functions to mutate (regex; None = all), every k-th mutant).
# The tests are the module's own test module (tests/README.md: the test tree mirrors the source tree), minus
# the trainings of a real network that would dominate every mutant's run.
HEAVY_TRAININGS = "not (sigkill or untrained or run_folder or uninterrupted_run or two_d_slice_model)"
PLAN: dict[str, tuple[list[str], str | None, int]] = {
    "masks": (["tests/test_masks.py", "-k", "not cli_masks"], None, 1),
    "checkpoint": (["tests/test_checkpoint.py", "tests/integration/test_bad_input.py", "-k", "checkpoint and not identical_predictions"], None, 2),
    "preprocess": (["tests/test_preprocess.py", "tests/test_infer.py", "tests/test_checkpoint.py", "-m", "not slow"], None, 6),
    "metrics": (["tests/test_metrics.py"], None, 16),
    "study.plan": (["tests/study/test_plan.py"], r"x_(training_subsets|size_label)$|xǁPlanǁ(sweep|ablation)", 4),
    "study.stats": (["tests/study/test_stats.py"], r"x_(summary_table|paired_comparison|recipe_ablation|choose_recipe)$", 4),
    "train": (["tests/test_train.py", "-k", HEAVY_TRAININGS], r"x_(prepare_data|_?train)$|xǁPlateauǁ", 10),
}


def source(module: str) -> str:
    """src/globalmask/study/plan.py for "study.plan"."""
    return "src/globalmask/" + module.replace(".", "/") + ".py"


def mutmut_section(module: str, tests: list[str]) -> str:
    return (
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["{source(module)}"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'process_isolation = "forkserver"\n'
    )


def prepare(module: str, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"\n# mutation testing.*", "\n", text, flags=re.S)  # drop the repository's own section
    (work / "pyproject.toml").write_text(text + "\n" + mutmut_section(module, PLAN[module][0]), encoding="utf-8")


def sample(module: str, work: Path, every: int | None = None, offset: int = 0) -> list[str]:
    _, pattern, step = PLAN[module]
    step = every or step
    meta = json.loads((work / "mutants" / (source(module) + ".meta")).read_text(encoding="utf-8"))
    keys = list(meta.get("exit_code_by_key", meta))
    keys.sort(key=lambda k: (k.rsplit("__mutmut_", 1)[0], int(k.rsplit("__mutmut_", 1)[1])))
    if pattern:
        keys = [k for k in keys if re.search(pattern, k.rsplit("__mutmut_", 1)[0])]
    return keys[offset::step]


def run(module: str, out: Path, report_only: bool = False, only: list[str] | None = None, every: int | None = None, offset: int = 0) -> dict:
    """Run the module's sample (or only the named mutants, e.g. an earlier run's survivors)."""
    work = out / module
    t0 = time.perf_counter()
    if not report_only:
        prepare(module, work)
        # first call: only generates the mutants (it then stops: no mutant has that name)
        subprocess.run([MUTMUT, "run", f"globalmask.{module}.no_such_function*"], cwd=work, check=False, capture_output=True)
        subprocess.run([MUTMUT, "run", "--max-children", "2", *(only or sample(module, work, every, offset))], cwd=work, check=False, capture_output=True)
    names = only or sample(module, work, every, offset)
    listing = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    status = dict(re.findall(r"^\s+(\S+): (.+)$", listing, flags=re.M))
    chosen = {n: status.get(n, "not checked") for n in names}
    counts: dict[str, int] = {}
    for s in chosen.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = {}
    for n, s in chosen.items():
        if s in ("survived", "suspicious", "no tests"):
            diff = subprocess.run([MUTMUT, "show", n], cwd=work, capture_output=True, text=True).stdout
            survivors[n] = [line for line in diff.splitlines() if line[:2] in ("- ", "+ ")]
    return {"module": module, "sampled": len(names), "counts": counts, "seconds": round(time.perf_counter() - t0), "survivors": survivors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(PLAN))
    parser.add_argument("--out", type=Path, default=Path("/tmp/globalmask-mutation"))
    parser.add_argument("--report-only", action="store_true", help="summarise an earlier run in --out, run nothing")
    parser.add_argument("--survivors-of", type=Path, help="run only the mutants that survived the run in this folder")
    parser.add_argument("--every", type=int, help="sample every k-th mutant instead of the plan's k (a smaller sample on a busy machine)")
    parser.add_argument("--offset", type=int, default=0, help="start the sample at this mutant (--every 20 and --every 20 --offset 10 together are every 10th)")
    args = parser.parse_args()
    for module in args.modules:
        only = None
        if args.survivors_of is not None:
            only = list(json.loads((args.survivors_of / f"{module}.json").read_text(encoding="utf-8"))["survivors"])
        r = run(module, args.out, args.report_only, only, args.every, args.offset)
        killed = r["counts"].get("killed", 0) + r["counts"].get("timeout", 0)
        print(f"## {module}: {r['sampled']} mutants sampled, {killed} killed (incl. timeouts), counts {r['counts']}, {r['seconds']} s")
        for name, lines in r["survivors"].items():
            print(f"- {name}")
            for line in lines:
                print(f"      {line}")
        (args.out / f"{module}.json").write_text(json.dumps(r, indent=1), encoding="utf-8")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
