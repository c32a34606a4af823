"""The package version, in a module of its own so every module can stamp it without importing the package root.

Keep equal to ``version`` in pyproject.toml (a test checks it).
"""

__version__ = "0.1.0"
