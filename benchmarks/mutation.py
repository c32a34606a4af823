"""Mutation score of every module under src/ with mutmut 3, one module at a time (benchmarks/mutation.md).

    .venv/bin/pip install -q "torch==2.13.0" -e ".[test,mutation]"
    nice -n 10 .venv/bin/python benchmarks/mutation.py [MODULE ...] [--out DIR] [--max N] [--seed S]
    .venv/bin/python benchmarks/mutation.py --list      # every module, its tests and its command

Every module under src/globalmask is covered (found on disk, so a new module is never left out):
PLAN names the tests of the modules that need a selection of their own; any other module runs its
mirrored test module (tests/README.md) without the ``slow`` trainings. A large module is sampled:
every k-th mutant, then at most ``--max`` of those drawn with a fixed seed.

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
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_MUTMUT_BIN = Path(sys.executable).with_name("mutmut")
# the mutation extra's script; without it, mutmut importable from this interpreter (e.g. on PYTHONPATH)
MUTMUT = [str(_MUTMUT_BIN)] if _MUTMUT_BIN.exists() else [sys.executable, "-m", "mutmut"]
#: At most this many mutants per module (a seeded draw from the every-k-th sample); --max overrides.
MAX_MUTANTS = 60

# module (dotted below globalmask): (tests mutmut may run for it, functions to mutate (regex; None = all),
# every k-th mutant).
# The tests are the module's own test module (tests/README.md: the test tree mirrors the source tree), minus
# the trainings of a real network that would dominate every mutant's run.
HEAVY_TRAININGS = "not (sigkill or untrained or run_folder or uninterrupted_run or two_d_slice_model)"
PLAN: dict[str, tuple[list[str], str | None, int]] = {
    "masks": (["tests/test_masks.py", "-k", "not cli_masks"], None, 1),
    "checkpoint": (["tests/test_checkpoint.py", "tests/integration/test_bad_input.py",
                    "-k", "checkpoint and not identical_predictions"], None, 2),
    "preprocess": (["tests/test_preprocess.py", "tests/test_infer.py", "tests/test_checkpoint.py", "-m", "not slow"],
                   None, 6),
    "metrics": (["tests/test_metrics.py"], None, 16),
    # every function since issue 29; with the plan-identity tests of test_external.py (committed plans keep their
    # hash and run ids)
    "study.plan": (["tests/study/test_plan.py", "tests/study/test_external.py", "-k",
                    "not external_sets_are_read_only and not study_plan_names and not bootstrap and not pooled"
                    " and not recipe_choice"], None, 1),
    "study.stats": (["tests/study/test_stats.py"],
                    r"x_(summary_table|paired_comparison|recipe_ablation|choose_recipe)$", 4),
    # every function since issue 29 (2026-12-02: only r"x_(prepare_data|_?train)$|xǁPlateauǁ", every 10th)
    "training": (["tests/test_training.py", "-k", HEAVY_TRAININGS], None, 1),
    # issue 29: the DICOM, export, lock and plan modules (their fast tests; dciodvfy skips where it is absent)
    "dicom_rt": (["tests/test_dicom_rt.py", "-m", "not slow"], None, 1),
    "dicom_seg": (["tests/test_dicom_seg.py"], None, 1),
    "io.dicom": (["tests/test_io.py", "-k", "not random_bytes and not corrupted_nifti and not absurd_nifti"], None, 1),
    "export": (["tests/test_export.py"], None, 1),
    "guard": (["tests/test_guard.py", "-m", "not slow"], None, 1),
    # modules without a test module of their own (tests/README.md): the tests that exercise them
    "checks": (["tests/integration/test_bad_input.py", "-m", "not slow"], None, 1),
    "errors": (["tests/test_cli.py", "tests/integration/test_bad_input.py", "-m", "not slow"], None, 1),
    # the package root's lazy names are tested in test_api.py (tests/README.md)
    "__init__": (["tests/test_cli.py", "tests/test_api.py", "-m", "not slow"], None, 1),
    "phantom.shapes": (["tests/phantom/test_shapes.py", "tests/phantom/test_headneck.py",
                        "tests/phantom/test_thorax.py", "-m", "not slow"], None, 1),
    "phantom.__init__": (["tests/phantom/test_cohort.py", "-m", "not slow"], None, 1),
    # the cohort's dataset.json of the thorax-varied kind (its acquisitions) is tested with that kind
    "phantom.cohort": (["tests/phantom/test_cohort.py", "tests/phantom/test_thorax_varied.py", "-m", "not slow"],
                       None, 1),
    # the anatomy builders: besides their orientation tests, the bit-for-bit pins of the cases and their label and
    # tissue checks (test_case.py, test_scene.py); thorax.py holds the thorax-varied acquisitions too
    "phantom.headneck": (["tests/phantom/test_headneck.py", "tests/phantom/test_case.py", "tests/phantom/test_scene.py",
                          "-m", "not slow"], None, 1),
    "phantom.thorax": (["tests/phantom/test_thorax.py", "tests/phantom/test_case.py", "tests/phantom/test_scene.py",
                        "tests/phantom/test_thorax_varied.py", "-m", "not slow"], None, 1),
    # the version string: pyproject's version and the records' machine info read it
    "_version": (["tests/integration/test_code_quality.py", "tests/study/test_records.py", "-k",
                  "version"], None, 1),
    # evaluate_folder's older tests are still in test_metrics.py, from before it moved to evaluation.py
    "evaluation": (["tests/test_evaluation.py", "tests/test_metrics.py", "-m", "not slow"], None, 1),
}


def all_modules() -> list[str]:
    """Every module under src/globalmask, dotted ("study.plan", "io.dicom", "study.__init__")."""
    base = ROOT / "src" / "globalmask"
    return sorted(
        ".".join(p.relative_to(base).with_suffix("").parts) for p in base.rglob("*.py") if "__pycache__" not in p.parts
    )


def mirrored_tests(module: str) -> list[str]:
    """The module's own test module by the mirror rule of tests/README.md (io.* -> tests/test_io.py)."""
    parts = module.split(".")
    if parts[0] == "io":
        return ["tests/test_io.py"]
    name = "init" if parts[-1] == "__init__" else parts[-1]
    return ["/".join(["tests", *parts[:-1], f"test_{name}.py"])]


def plan_for(module: str) -> tuple[list[str], str | None, int]:
    """(tests, functions to mutate, every k-th) of a module: PLAN's entry, else its mirrored test
    module without the slow trainings."""
    if module in PLAN:
        return PLAN[module]
    return ([*mirrored_tests(module), "-m", "not slow"], None, 1)


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
        'also_copy = ["benchmarks"]\n'
    )


#: Committed study plans, records and reports that tests read (the committed plans keep their hashes and run
#: ids; study.report's sections come back from the records as committed).
STUDY_FILES = re.compile(r"^benchmarks/[^/]+(/[^/]+)?/(plan\.json|report\.md|records/[^/]+\.json)$")


def prepare(module: str, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    git_ls = ["git", "ls-files", "benchmarks"]
    tracked = subprocess.run(git_ls, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    # only these small JSON files, never a study folder in use
    for name in (f for f in tracked if STUDY_FILES.match(f)):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"\n# mutation testing.*", "\n", text, flags=re.S)  # drop the repository's own section
    (work / "pyproject.toml").write_text(text + "\n" + mutmut_section(module, plan_for(module)[0]), encoding="utf-8")


def sample(
    module: str, work: Path, every: int | None = None, offset: int = 0, most: int | None = MAX_MUTANTS, seed: int = 0
) -> list[str]:
    """Every k-th mutant of the chosen functions (source order), then at most ``most`` of them drawn with ``seed``."""
    _, pattern, step = plan_for(module)
    step = every or step
    meta = json.loads((work / "mutants" / (source(module) + ".meta")).read_text(encoding="utf-8"))
    keys = list(meta.get("exit_code_by_key", meta))
    keys.sort(key=lambda k: (k.rsplit("__mutmut_", 1)[0], int(k.rsplit("__mutmut_", 1)[1])))
    if pattern:
        keys = [k for k in keys if re.search(pattern, k.rsplit("__mutmut_", 1)[0])]
    keys = keys[offset::step]
    if most is not None and len(keys) > most:
        keep = sorted(random.Random(seed).sample(range(len(keys)), most))
        keys = [keys[i] for i in keep]
    return keys


def run(
    module: str,
    out: Path,
    report_only: bool = False,
    only: list[str] | None = None,
    every: int | None = None,
    offset: int = 0,
    most: int | None = MAX_MUTANTS,
    seed: int = 0,
) -> dict:
    """Run the module's sample (or only the named mutants, e.g. an earlier run's survivors)."""
    work = out / module
    t0 = time.perf_counter()
    if not report_only:
        prepare(module, work)
        # first call: only generates the mutants (it then stops: no mutant has that name)
        subprocess.run(
            [*MUTMUT, "run", f"globalmask.{module}.no_such_function*"], cwd=work, check=False, capture_output=True
        )
        subprocess.run(
            [*MUTMUT, "run", "--max-children", "2", *(only or sample(module, work, every, offset, most, seed))],
            cwd=work,
            check=False,
            capture_output=True,
        )
    names = only or sample(module, work, every, offset, most, seed)
    listing = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    status = dict(re.findall(r"^\s+(\S+): (.+)$", listing, flags=re.M))
    chosen = {n: status.get(n, "not checked") for n in names}
    counts: dict[str, int] = {}
    for s in chosen.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = {}
    for n, s in chosen.items():
        if s in ("survived", "suspicious", "no tests"):
            diff = subprocess.run([*MUTMUT, "show", n], cwd=work, capture_output=True, text=True).stdout
            survivors[n] = [line for line in diff.splitlines() if line[:2] in ("- ", "+ ")]
    return {
        "module": module,
        "sampled": len(names),
        "counts": counts,
        "seconds": round(time.perf_counter() - t0),
        "survivors": survivors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=all_modules())
    parser.add_argument("--out", type=Path, default=Path("/tmp/globalmask-mutation"))
    parser.add_argument("--report-only", action="store_true", help="summarise an earlier run in --out, run nothing")
    parser.add_argument("--survivors-of", type=Path, help="run only the mutants that survived the run in this folder")
    parser.add_argument(
        "--every",
        type=int,
        help="sample every k-th mutant instead of the plan's k (a smaller sample on a busy machine)",
    )
    parser.add_argument(
        "--offset",
        type=int,
        default=0,
        help="start the sample at this mutant (--every 20 and --every 20 --offset 10 together are every 10th)",
    )
    parser.add_argument(
        "--max",
        type=int,
        default=MAX_MUTANTS,
        help=f"at most this many mutants per module, drawn with --seed (default {MAX_MUTANTS}; 0: no limit)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max draw")
    parser.add_argument(
        "--list",
        action="store_true",
        help="print every module, the tests its mutants run against and its command; run nothing",
    )
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in all_modules()]
    if unknown:
        parser.error(f"no module {unknown} under src/globalmask (dotted: study.plan, io.dicom)")
    if args.list:
        for module in args.modules:
            tests, pattern, step = plan_for(module)
            print(f"{module}\t{source(module)}\t{' '.join(tests)}\t{pattern or 'all'}\tevery {step}\t"
                  f"nice -n 10 .venv/bin/python benchmarks/mutation.py {module}")
        return
    for module in args.modules:
        only = None
        if args.survivors_of is not None:
            only = list(json.loads((args.survivors_of / f"{module}.json").read_text(encoding="utf-8"))["survivors"])
        r = run(module, args.out, args.report_only, only, args.every, args.offset, args.max or None, args.seed)
        killed = r["counts"].get("killed", 0) + r["counts"].get("timeout", 0)
        print(
            f"## {module}: {r['sampled']} mutants sampled, {killed} killed (incl. timeouts),"
            f" counts {r['counts']}, {r['seconds']} s"
        )
        for name, lines in r["survivors"].items():
            print(f"- {name}")
            for line in lines:
                print(f"      {line}")
        (args.out / f"{module}.json").write_text(json.dumps(r, indent=1), encoding="utf-8")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
