"""Atomic files: every writer writes a temporary file beside its destination and renames it into
place, so a crash never leaves a half-written file that looks complete; JSON read and written."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputFileError, WriteError
from .volume import volume_suffix

# ----------------------------------------------------------------------------------------------
# atomic writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the destination's suffix so format-sniffing writers (nibabel,
    SimpleITK) pick the right format. A crash leaves at most a ``.tmp-*`` file, never a truncated
    file under the real name.

    Parameters
    ----------
    path : str or Path
        The destination file; its folder is created if missing.

    Yields
    ------
    Path
        The temporary file to write, in the destination's folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = volume_suffix(path) or path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, path)
    except OSError as exc:  # full disk, quota, ...: say so, and that the old file is still there
        tmp_path.unlink(missing_ok=True)
        raise WriteError(write_failure(path, exc), path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_failure(path: str | Path, exc: BaseException) -> str:
    """'could not write X (reason); the previous X is unchanged' -- the message of a failed atomic write.

    Parameters
    ----------
    path : str or Path
        The destination that could not be written.
    exc : BaseException
        The error the write raised; its ``strerror`` (or last line) is the reason given.

    Returns
    -------
    str
        The one-line message.
    """
    text = str(exc).strip()
    reason = getattr(exc, "strerror", None) or (text.splitlines()[-1] if text else type(exc).__name__)
    name = Path(path).name
    kept = f"the previous {name} is unchanged" if Path(path).exists() else "nothing was written under that name"
    return f"could not write {name} ({reason}; is the disk full?); {kept}"


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, atomically.

    Parameters
    ----------
    path : str or Path
        The destination file.
    text : str
        The content.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON; numpy values and paths are converted (see :func:`json_safe` for NaN).

    Parameters
    ----------
    path : str or Path
        The destination file, written atomically.
    obj : Any
        A JSON-serialisable value (numpy scalars, arrays and paths allowed).

    Returns
    -------
    Path
        ``path``.
    """
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every value JSON can hold: NaN and infinities become null (JSON has neither,
    ``json.dumps`` would write the invalid token ``NaN``), numpy scalars and arrays become Python
    numbers and lists, paths become strings; dicts, lists and tuples are converted recursively.

    Parameters
    ----------
    obj : Any
        The value to convert.

    Returns
    -------
    Any
        The converted value (tuples become lists).
    """
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _json_default(obj: Any) -> Any:
    """json.dumps hook for values it cannot write (numpy, paths); NaN is left to the caller (:func:`json_safe`)."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path`` (``.json`` or gzip-compressed ``.json.gz``); malformed or
    unreadable files get an error naming them.

    The one way globalmask reads a JSON file (dataset.json, splits, run records, markers), so a
    broken file is refused in one line, never with a traceback.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    dict[str, Any]
        Its object.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):  # a compressed copy (large study records are committed so)
            obj = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        else:
            obj = json.loads(path.read_text(encoding="utf-8"))
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DatasetError(f"not a readable gzip file ({exc or 'truncated'})", path) from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from exc
    except OSError as exc:
        raise InputFileError(f"cannot read ({exc.strerror})", path) from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"expected a JSON object, got {type(obj).__name__}", path)
    return obj
