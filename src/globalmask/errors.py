"""Exceptions that name the file and the problem.

Every error globalmask raises on a user's input derives from :class:`GlobalmaskError`; the CLI
prints its message (no traceback unless ``--debug``) and exits with a non-zero status. The
subclasses let callers (and tests) tell apart *what kind* of mistake was made.
"""

from __future__ import annotations

from pathlib import Path


class GlobalmaskError(Exception):
    """Base class: a problem with the user's input or settings, described for a human.

    Parameters
    ----------
    message : str
        The problem, for a human (kept as :attr:`problem`).
    path : str or Path or None
        The file or folder concerned; prefixed to the message when given.

    Attributes
    ----------
    exit_code : int
        The CLI's exit status for this kind of error.
    path : Path or None
        The file or folder concerned.
    problem : str
        The message without the path.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputFileError(GlobalmaskError):
    """A file is missing, unreadable, corrupt or not a volume."""


class GeometryError(GlobalmaskError):
    """Shapes, affines or spacings are inconsistent or absurd."""


class IntensityError(GlobalmaskError):
    """Voxel values are unusable (NaN/inf) or do not look like what the recipe expects."""


class DatasetError(GlobalmaskError):
    """dataset.json, splits.json, case ids or labels are malformed or inconsistent."""


class CheckpointError(GlobalmaskError):
    """A checkpoint is unreadable, from another version, or does not fit the request."""


class OutputError(GlobalmaskError):
    """An output location would overwrite or live inside the user's input."""


class ResourceError(GlobalmaskError):
    """The requested job would not fit in memory at the chosen settings."""


class WriteError(OutputError):
    """An output could not be written (full disk, quota, read-only file system); nothing was replaced."""

    exit_code = 1
