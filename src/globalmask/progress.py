"""Progress for people, lines for logs.

A progress bar is drawn only where a person watches: on a terminal (stderr is a TTY), unless
``TQDM_DISABLE`` is set or the command runs with ``--quiet``. Where no bar is drawn (output
redirected to a file, a batch job, a study's worker) the same events become plain lines through
the standard :mod:`logging` module, logger ``globalmask``: one per validation check of a training
run and one per case of ``predict`` and ``evaluate``, never a ``\\r``-rewritten line.

tqdm reads ``TQDM_DISABLE`` only as the default of an argument that globalmask always passes, so
:func:`bars_enabled` honours it here. The command line configures the logger (:func:`configure`):
INFO by default, WARNING with ``--quiet``, DEBUG with ``--verbose``; a program using the Python
API configures :mod:`logging` as it likes (by default it shows warnings only).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

LOG = logging.getLogger("globalmask")

#: Set by ``--quiet``: no progress bar whatever the terminal.
_quiet = False

_FALSE = ("", "0", "false", "no", "off")


def bars_enabled(progress: bool = True, stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar: asked for, on a terminal, not ``TQDM_DISABLE`` and not ``--quiet``.

    Parameters
    ----------
    progress : bool
        Whether the caller asks for a bar.
    stream : TextIO or None
        Where the bar would go; None for stderr.

    Returns
    -------
    bool
        Whether to draw it.
    """
    if not progress or _quiet:
        return False
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE:
        return False
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def note(message: str, bar: bool = False) -> None:
    """One line for the log: at INFO where no bar shows the same progress, at DEBUG under a bar.

    Parameters
    ----------
    message : str
        The line.
    bar : bool
        Whether a progress bar shows the same progress.
    """
    LOG.log(logging.DEBUG if bar else logging.INFO, message)


class _TqdmHandler(logging.Handler):
    """Writes each record as one line on stderr, above any progress bar being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never stop a command
            self.handleError(record)


def configure(verbosity: int = 0, prefix: str = "globalmask") -> None:
    """The command line's logging: -1 quiet (warnings and errors), 0 the default (INFO), 1 verbose (DEBUG).

    Parameters
    ----------
    verbosity : int
        -1, 0 or 1.
    prefix : str
        Printed before every line (``globalmask: ...``).
    """
    global _quiet
    unconfigure()
    _quiet = verbosity < 0
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    LOG.propagate = False


def unconfigure() -> None:
    """Undo :func:`configure` (the command line calls it when a command ends)."""
    global _quiet
    _quiet = False
    for h in list(LOG.handlers):
        if isinstance(h, _TqdmHandler):
            LOG.removeHandler(h)
    LOG.setLevel(logging.NOTSET)
    LOG.propagate = True


def bar_kwargs(progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments for ``tqdm(...)`` with ``disable`` decided by :func:`bars_enabled`.

    Parameters
    ----------
    progress : bool
        Whether the caller asks for a bar.
    **kwargs : Any
        Other ``tqdm`` arguments.

    Returns
    -------
    dict[str, Any]
        ``kwargs`` with ``disable`` set.
    """
    return {**kwargs, "disable": not bars_enabled(progress)}
