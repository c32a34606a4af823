"""Protecting the user's files: read-only inputs, one writer per output folder, clean interrupts.

Four guarantees every command builds on, each checked *before* any work starts:

* :func:`check_output_dir` refuses an output folder that holds the command's inputs, lies in a
  dataset (nnU-Net ``imagesTr``/``labelsTr``/``imagesTs``, a plain ``images``/``labels`` layout, a
  DICOM folder), or is a non-empty folder globalmask did not create; ``overwrite=True`` (the CLI's
  ``--overwrite``) lifts only the last one. Whatever the flag, an output name that already exists
  is replaced only when the folder's marker lists it as a file globalmask wrote: a user's file is
  never replaced. It creates nothing.
* :func:`claim_output_dir` creates the folder and marks it as a globalmask output (a hidden
  ``.globalmask-output.json``, which also lists the files globalmask wrote there), so a later run
  may write there again and replace its own files, and only those.
* :class:`RunLock` makes one process the only writer of a folder: an ``fcntl`` lock on a hidden
  lock file that records host and PID. The kernel drops the lock when its process dies, so a lock
  left by a killed run is detected as stale and taken over; a live holder is named in the error.
* :func:`stop_on_signals` turns SIGTERM/SIGHUP into :class:`Interrupted` (a ``KeyboardInterrupt``),
  so ``finally`` blocks and the atomic writers in :mod:`globalmask.io` remove their temporary
  files on ``kill`` as on Ctrl-C; :func:`remove_temp_files` clears what a ``kill -9`` left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

from ._version import __version__
from .errors import GlobalmaskError, OutputError
from .io import read_json, write_json

MARKER_NAME = ".globalmask-output.json"
LOCK_NAME = ".globalmask.lock"
TEMP_PREFIX = ".tmp-"  # io.atomic_path's temporary files

#: Entries that make a folder a dataset (read-only to every command).
DATASET_ENTRIES = ("dataset.json", "imagesTr", "labelsTr", "imagesTs", "labelsTs")


class LockedError(OutputError):
    """Another process is writing to the same output folder."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP delivered as an exception, so cleanup runs as for Ctrl-C.

    Parameters
    ----------
    signum : int
        The signal number received (kept as ``self.signum``; the message is its name).
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ----------------------------------------------------------------------------------------------
# what is an input, a dataset, a globalmask output


def is_dataset_folder(path: str | Path) -> bool:
    """True for an nnU-Net dataset, a plain images/+labels/ dataset, one of their parts, or a DICOM folder.

    Parameters
    ----------
    path : str or Path
        The folder to look at (anything but an existing folder is not a dataset).

    Returns
    -------
    bool
        Whether ``path`` is a dataset folder, read-only to every command.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    if any((p / name).exists() for name in DATASET_ENTRIES):
        return True
    if (p / "images").is_dir() and (p / "labels").is_dir():
        return True
    if p.name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") or (
        p.name in ("images", "labels") and (p.parent / ("labels" if p.name == "images" else "images")).is_dir()
    ):
        return True
    return _holds_dicom(p)


def _holds_dicom(p: Path, limit: int = 64) -> bool:
    """A few files checked for the DICOM magic (cheap even in a large folder)."""
    try:
        with os.scandir(p) as it:
            for n, entry in enumerate(it):
                if n >= limit:
                    break
                if entry.is_file() and (entry.name.lower().endswith((".dcm", ".ima")) or "." not in entry.name):
                    try:
                        with open(entry.path, "rb") as fh:
                            fh.seek(128)
                            if fh.read(4) == b"DICM":
                                return True
                    except OSError:
                        continue
    except OSError:
        return False
    return False


def enclosing_dataset(path: str | Path) -> Path | None:
    """``path`` or its nearest existing ancestor that is a dataset folder (see :func:`is_dataset_folder`).

    Parameters
    ----------
    path : str or Path
        A file or folder, existing or not.

    Returns
    -------
    Path or None
        The resolved dataset folder, or None when ``path`` lies in none.
    """
    p = Path(path).resolve()
    for candidate in (p, *p.parents):
        if candidate.exists() and is_dataset_folder(candidate):
            return candidate
    return None


def is_globalmask_output(path: str | Path) -> bool:
    """A folder globalmask created: its marker, a run's config.json, or a phantom's dataset.json.

    Parameters
    ----------
    path : str or Path
        The folder to look at.

    Returns
    -------
    bool
        Whether globalmask created the folder.
    """
    p = Path(path)
    if (p / MARKER_NAME).is_file():
        return True
    for name, key in (("config.json", "globalmask_version"), ("dataset.json", "globalmask_phantom_version")):
        f = p / name
        if f.is_file():
            try:
                if key in read_json(f):
                    return True
            except GlobalmaskError:  # unreadable or not an object: not globalmask's
                pass
    return False


def written_files(folder: str | Path) -> set[str]:
    """Names (relative to ``folder``, POSIX) that the folder's marker lists as written by globalmask.

    Parameters
    ----------
    folder : str or Path
        An output folder.

    Returns
    -------
    set of str
        The listed names (empty when there is no readable marker).
    """
    try:
        info = read_json(Path(folder) / MARKER_NAME)
    except GlobalmaskError:
        return set()
    files = info.get("files", [])
    return {str(f) for f in files} if isinstance(files, list) else set()


def _relative(out: Path, target: Path) -> str:
    try:
        return Path(target).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return Path(target).name


def check_targets(out: str | Path, targets: Iterable[str | Path], what: str = "--out") -> None:
    """Refuse before any work when an output name already exists and globalmask did not write it.

    A file is "ours" only when the folder's marker lists it (see :func:`record_outputs`); no flag
    lifts this refusal, so the message suggests none.

    Parameters
    ----------
    out : str or Path
        The output folder.
    targets : iterable of str or Path
        The files the command will write.
    what : str, optional
        How the folder is named in the message (the CLI flag).

    Raises
    ------
    OutputError
        When a target exists and the marker does not list it.
    """
    out = Path(out)
    ours = written_files(out)
    for t in targets:
        t = Path(t)
        if (t.exists() or t.is_symlink()) and _relative(out, t) not in ours:
            raise OutputError(
                f"{what}: {t.name} already exists there and globalmask did not write it; "
                "a user's file is never replaced: move it away or choose another folder",
                t,
            )


def check_unique_targets(pairs: Iterable[tuple[str | Path, str | Path]]) -> None:
    """Refuse two inputs that would be written to one output name, naming both (before any work).

    Parameters
    ----------
    pairs : iterable of tuple of (str or Path, str or Path)
        (input, output file) pairs.

    Raises
    ------
    OutputError
        When two different inputs share an output file.
    """
    seen: dict[str, Path] = {}
    for src, dst in pairs:
        key = str(Path(dst))
        if key in seen and Path(seen[key]) != Path(src):
            raise OutputError(
                f"inputs {seen[key]} and {src} would both be written to {Path(dst).name}; "
                "rename one or run them separately",
                dst,
            )
        seen.setdefault(key, Path(src))


def record_outputs(out: str | Path, targets: Iterable[str | Path]) -> None:
    """Add the targets that now exist to the marker's list of files globalmask wrote (call holding the lock).

    Parameters
    ----------
    out : str or Path
        The output folder (nothing is recorded when it has no readable marker).
    targets : iterable of str or Path
        The files the command wrote or may have written.
    """
    out = Path(out)
    marker = out / MARKER_NAME
    try:
        info = read_json(marker)
    except GlobalmaskError:
        return
    files = set(written_files(out)) | {_relative(out, Path(t)) for t in targets if Path(t).exists()}
    if files != set(info.get("files", []) or []):
        write_json(marker, {**info, "files": sorted(files)})


def _visible_entries(p: Path) -> list[str]:
    return sorted(c.name for c in p.iterdir() if not c.name.startswith("."))


def check_output_dir(
    out: str | Path,
    inputs: Iterable[str | Path] = (),
    *,
    overwrite: bool = False,
    what: str = "--out",
    tolerate: Iterable[str] = (),
    targets: Iterable[str | Path] = (),
) -> Path:
    """Refuse an output folder that would touch the user's inputs or files; create nothing.

    ``tolerate`` names entries a caller may find in a folder globalmask has not marked yet and
    has already vetted (a study's ``records/`` copied in from another machine). ``targets`` are
    the files the command will write (see :func:`check_targets`).

    Parameters
    ----------
    out : str or Path
        The output folder (need not exist).
    inputs : iterable of str or Path, optional
        The command's input files and folders (read-only).
    overwrite : bool, optional
        Accept a non-empty folder globalmask did not create (the CLI's ``--overwrite``).
    what : str, optional
        How the folder is named in messages (the CLI flag).
    tolerate : iterable of str, optional
        Entry names that do not make the folder "not empty".
    targets : iterable of str or Path, optional
        The files the command will write.

    Returns
    -------
    Path
        ``out`` as a Path.

    Raises
    ------
    OutputError
        When ``out``

        * is an existing file;
        * is an input, the folder holding an input file, or lies inside an input folder (always);
        * is or lies inside a dataset folder (always: datasets are read-only);
        * already holds one of ``targets`` that globalmask did not write (always);
        * is a non-empty folder that globalmask did not create (unless ``overwrite``: then the
          command writes beside the folder's files and replaces none of them).
    """
    out = Path(out)
    res = out.resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} exists and is not a folder", out)
    for item in inputs:
        p = Path(item)
        pr = p.resolve()
        folder = pr if p.is_dir() else pr.parent
        if res in (pr, folder) or (p.is_dir() and res.is_relative_to(pr)):
            kind = "input dataset folder" if is_dataset_folder(folder) or enclosing_dataset(folder) else "input folder"
            where = "is" if res == folder else "is inside"
            raise OutputError(
                f"{what} {where} the {kind} {folder}; inputs are read-only: choose a separate folder", out
            )
    ds = enclosing_dataset(res)
    if ds is not None:
        where = "is the dataset folder" if ds == res else f"is inside the dataset folder {ds}"
        raise OutputError(
            f"{what} {where}; datasets are read-only (--overwrite does not change that): choose another folder", out
        )
    check_targets(out, targets, what)
    if not overwrite:
        foreign = [e for e in _visible_entries(out) if e not in set(tolerate)] if out.is_dir() else []
        if foreign and not is_globalmask_output(out):
            shown = ", ".join(foreign[:3])
            raise OutputError(
                f"{what} is not empty ({shown}, ...) and is not a globalmask output: choose an empty or new folder "
                "(or pass --overwrite to write beside its files, none of which is replaced)",
                out,
            )
    return out


def claim_output_dir(out: str | Path, command: str) -> Path:
    """Create ``out`` (parents too) and mark it as a globalmask output; call after :func:`check_output_dir`.

    Parameters
    ----------
    out : str or Path
        The output folder.
    command : str
        The command recorded in the marker.

    Returns
    -------
    Path
        ``out`` as a Path.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER_NAME
    if not marker.exists():
        write_json(
            marker,
            {
                "tool": "globalmask",
                "version": __version__,
                "command": command,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": [],
            },
        )
    return out


# ----------------------------------------------------------------------------------------------
# one writer per folder


def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (Linux), to tell a live holder from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(folder: str | Path) -> dict | None:
    """The holder recorded in ``folder``'s lock file (host, pid, command, started), or None.

    Parameters
    ----------
    folder : str or Path
        The locked (or unlocked) folder.

    Returns
    -------
    dict or None
        The lock file's content, None when there is no readable lock file.
    """
    try:
        return read_json(Path(folder) / LOCK_NAME)
    except GlobalmaskError:
        return None


class RunLock:
    """Exclusive writer lock on a folder, as a context manager: ``with RunLock(out, "train"): ...``.

    The lock file ``<folder>/.globalmask.lock`` holds ``{"host", "pid", "command", "started"}``.
    Acquiring takes an ``fcntl.flock`` on it: a live holder on this host keeps it, a dead one has
    lost it (stale: taken over silently). A lock file written on *another* host whose holder
    cannot be checked is refused with the holder named (delete the file if that run is gone).
    Releasing removes the file. Re-entrant within one process (nested acquisitions are counted).

    Parameters
    ----------
    folder : str or Path
        The folder to lock (created on acquiring if needed).
    command : str, optional
        The command recorded in the lock file and named to other processes.
    """

    _held: ClassVar[dict[Path, int]] = {}
    _mutex = threading.Lock()

    def __init__(self, folder: str | Path, command: str = "run"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (or count one more nested acquisition in this process).

        Returns
        -------
        RunLock
            This lock.

        Raises
        ------
        LockedError
            When a live process holds it, or its holder on another host cannot be checked.
        """
        import fcntl  # noqa: PLC0415  POSIX-only module, needed only where a lock is taken

        key = self.folder.resolve()
        with self._mutex:
            if key in self._held:
                self._held[key] += 1
                return self
        self.folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise LockedError(self._held_message(read_lock(self.folder)), self.folder) from None
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is None or st.st_ino != os.fstat(fd).st_ino:  # released and removed meanwhile: retry
                os.close(fd)
                continue
            previous = read_lock(self.folder)
            if previous and previous.get("pid") and previous.get("pid") != os.getpid():
                pid = int(previous["pid"])
                other_host = previous.get("host") != host
                # flock is authoritative on a local disk; these catch file systems where it is not (NFS)
                alive_here = not other_host and _pid_alive(pid) and _process_start(pid) == previous.get("start")
                if other_host or alive_here:
                    os.close(fd)
                    raise LockedError(
                        self._held_message(previous) + f"; if that run is gone, delete {self.path}", self.folder
                    )
            info = {
                "host": host,
                "pid": os.getpid(),
                "start": _process_start(os.getpid()),
                "command": self.command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
            self._fd = fd
            with self._mutex:
                self._held[key] = 1
            return self
        raise LockedError("could not take the folder's lock (it keeps changing hands)", self.folder)

    @staticmethod
    def _held_message(holder: dict | None) -> str:
        if not holder:
            return "another globalmask process is writing to this folder; wait for it to finish or choose another --out"
        return (
            f"another globalmask {holder.get('command', 'run')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started')}) is writing to this folder; wait for it to finish or choose another --out"
        )

    def release(self) -> None:
        """Undo one acquisition; the last one removes the lock file and drops the lock."""
        key = self.folder.resolve()
        with self._mutex:
            count = self._held.get(key, 0)
            if count > 1:
                self._held[key] = count - 1
                return
            self._held.pop(key, None)
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------
# interrupts and leftovers


@contextlib.contextmanager
def stop_on_signals(signals: Iterable[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Deliver SIGTERM/SIGHUP as :class:`Interrupted` inside the block (main thread only).

    Python's default for SIGTERM is to die on the spot, skipping ``finally`` blocks: temporary
    files and locks would stay behind. Raised as an exception, the signal unwinds the stack like
    Ctrl-C. Outside the main thread (where handlers cannot be set) the block runs unchanged.

    Parameters
    ----------
    signals : iterable of int, optional
        The signals to convert; the previous handlers are restored on leaving the block.

    Yields
    ------
    None
        Control to the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {}
    for s in signals:
        with contextlib.suppress(ValueError, OSError):
            previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def remove_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the ``.tmp-*`` files an interrupted writer left in ``folder``; call while holding its lock.

    Parameters
    ----------
    folder : str or Path
        The output folder.
    recursive : bool, optional
        Look in sub-folders too.

    Returns
    -------
    list of Path
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(f"{TEMP_PREFIX}*") if recursive else folder.glob(f"{TEMP_PREFIX}*")
    removed = []
    for p in found:
        if p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def writing(
    out: str | Path,
    command: str,
    inputs: Iterable[str | Path] = (),
    *,
    overwrite: bool = False,
    targets: Iterable[str | Path] = (),
    what: str = "--out",
) -> Iterator[Path]:
    """The whole protocol for a command writing into ``out``: check, lock, claim, clean, catch signals.

    ``with guard.writing(args.out, "predict", inputs, overwrite=args.overwrite, targets=names) as out: ...``
    ``targets`` are checked before (never a user's file) and recorded in the marker afterwards
    (those that exist then: every one of them was written by this command or an earlier one).

    Parameters
    ----------
    out : str or Path
        The output folder.
    command : str
        The command's name (lock file and marker).
    inputs : iterable of str or Path, optional
        The command's inputs (read-only).
    overwrite : bool, optional
        Accept a non-empty folder globalmask did not create.
    targets : iterable of str or Path, optional
        The files the command will write.
    what : str, optional
        How the folder is named in messages (the CLI flag).

    Yields
    ------
    Path
        ``out``, checked, locked and marked.
    """
    inputs, targets = list(inputs), [Path(t) for t in targets]
    check_output_dir(out, inputs, overwrite=overwrite, targets=targets, what=what)
    created = not Path(out).exists()
    try:
        with RunLock(out, command):
            claim_output_dir(out, command)
            check_targets(out, targets, what)  # again under the lock: nothing appeared meanwhile
            remove_temp_files(out)
            try:
                with stop_on_signals():
                    yield Path(out)
            finally:
                record_outputs(out, targets)
    finally:
        if created:
            _remove_if_only_ours(Path(out))


def _remove_if_only_ours(out: Path) -> None:
    """A folder this command created and left empty (refused or interrupted early) is removed again."""
    with contextlib.suppress(OSError):
        if out.is_dir() and all(c.name in (MARKER_NAME,) for c in out.iterdir()):
            (out / MARKER_NAME).unlink(missing_ok=True)
            out.rmdir()


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """All or nothing: yield a hidden temporary folder beside ``out``, moved onto ``out`` when the block succeeds.

    ``out`` must be absent or empty. On any error or interrupt the temporary folder is deleted, so
    ``out`` is never left half-written and a rerun is not refused by the leftovers of a failed one.

    Parameters
    ----------
    out : str or Path
        The folder to create.

    Yields
    ------
    Path
        The temporary folder to fill.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError("output folder exists and is not empty; choose an empty or new folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the dataset gets the usual mode
        if out.exists():
            out.rmdir()  # empty (checked above): the finished folder takes its place
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
