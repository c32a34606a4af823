"""The linter and the type checker run as tests, so CI (the README's test command) enforces them.

What they check is configured in pyproject.toml ([tool.ruff], [tool.mypy]) with the reason for
every rule family, ignore and strict module. Both tools come with the ``test`` extra.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", "src", "tests", "benchmarks")
    assert result.returncode == 0, f"ruff check src tests benchmarks:\n{result.stdout}\n{result.stderr}"


def test_mypy_finds_nothing() -> None:
    result = _run("mypy")  # files and per-module strictness from [tool.mypy]
    assert result.returncode == 0, f"mypy (strict on io, masks, metrics, preprocess, model, infer):\n{result.stdout}\n{result.stderr}"
