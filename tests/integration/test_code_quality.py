"""The linters and the type checker run as tests, so CI (the README's test command) enforces them.

What they check is configured in pyproject.toml ([tool.ruff], [tool.mypy], [tool.numpydoc_validation]) with the
reason for every rule family, ignore and strict module. The tools come with the ``test`` extra.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace",
        check=False,
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks")
    assert result.returncode == 0, f"ruff check src tests benchmarks:\n{result.stdout}\n{result.stderr}"


def test_mypy_finds_nothing() -> None:
    result = _run("mypy")  # files and per-module strictness from [tool.mypy]
    strict = "strict on io, masks, metrics, preprocess, model, infer"
    assert result.returncode == 0, f"mypy ({strict}):\n{result.stdout}\n{result.stderr}"


def _sources() -> list[Path]:
    return sorted((ROOT / "src" / "globalmask").rglob("*.py"))


def test_numpydoc_finds_nothing() -> None:
    """Every public function and method documents its parameters and what it returns (numpydoc style)."""
    result = _run("numpydoc", "lint", *(str(p.relative_to(ROOT)) for p in _sources()))
    findings = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.strip()]
    assert result.returncode == 0 and not findings, "numpydoc lint src/globalmask:\n" + "\n".join(findings)


#: A function longer than this does more than one thing: split it into named steps.
MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_the_package_version_is_the_one_pyproject_declares() -> None:
    """Checkpoints, records and DICOM objects are stamped with ``__version__``: it must be the installed one."""
    import tomllib

    from globalmask import __version__

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert __version__ == declared
