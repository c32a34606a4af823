"""Inputs are read-only, one writer per folder, interrupts and full disks leave nothing half-done."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from globalmask import guard
from globalmask.checkpoint import save_atomic
from globalmask.cli import main
from globalmask.errors import CheckpointError, OutputError, WriteError
from globalmask.io import atomic_path, write_text

from .conftest import make_tiny_dataset

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ----------------------------------------------------------------------------------------------
# output folders


def test_output_dir_refusals_and_what_overwrite_lifts(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(16, 16, 12))
    img = ds / "imagesTr" / "case_000_0000.nii.gz"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    refused = {
        "input folder": (ds / "imagesTr", [img], "input dataset folder"),
        "inside an input folder": (ds / "imagesTr" / "sub", [ds / "imagesTr"], "inside the input"),
        "labelsTr": (ds / "labelsTr", [img], "dataset folder"),
        "labelsTr with --overwrite": (ds / "labelsTr", [img], "datasets are read-only"),
        "new folder inside a dataset": (ds / "preds" / "x", [tmp_path / "other.nii.gz"], "inside the dataset folder"),
        "foreign non-empty": (foreign, [], "not a globalmask output"),
        "a file": (img, [], "not a folder"),
    }
    for name, (out, inputs, text) in refused.items():
        with pytest.raises(OutputError, match=text) as info:
            guard.check_output_dir(out, inputs, overwrite="--overwrite" in name)
        assert not (ds / "preds").exists(), name  # a refusal creates nothing
        if name != "foreign non-empty":  # only there can the flag help
            assert "--overwrite" not in str(info.value).replace("--overwrite does not change that", ""), name
    # --overwrite lifts the foreign-folder refusal only, never the dataset or input-folder ones
    guard.check_output_dir(foreign, [], overwrite=True)
    with pytest.raises(OutputError, match="input"):
        guard.check_output_dir(ds / "imagesTr", [img], overwrite=True)
    # new, empty and globalmask-made folders are fine
    guard.check_output_dir(tmp_path / "new" / "deeper", [img])
    (tmp_path / "empty").mkdir()
    guard.check_output_dir(tmp_path / "empty", [img])
    ours = guard.claim_output_dir(tmp_path / "ours", "masks")
    (ours / "case_000.nii.gz").write_bytes(b"x")
    guard.check_output_dir(ours, [img])
    assert guard.is_globalmask_output(ours) and not guard.is_globalmask_output(foreign)


def test_dicom_and_plain_layouts_are_datasets(tmp_path):
    dcm = tmp_path / "series"
    dcm.mkdir()
    (dcm / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    (plain / "labels").mkdir()
    assert guard.is_dataset_folder(dcm) and guard.is_dataset_folder(plain) and guard.is_dataset_folder(plain / "labels")
    assert guard.enclosing_dataset(plain / "labels" / "new") == plain / "labels"
    assert not guard.is_dataset_folder(tmp_path) and guard.enclosing_dataset(tmp_path / "x") is None


def test_overwrite_writes_beside_foreign_files_and_keeps_them(tmp_path, capsys):
    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(16, 16, 12))
    img = ds / "imagesTr" / "case_000_0000.nii.gz"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["masks", str(img), "--out", str(foreign)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["masks", str(img), "--out", str(foreign), "--overwrite"]) == 0
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "mine" and (foreign / "case_000.nii.gz").is_file()


def _sha(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tiny_model(folder: Path) -> Path:
    from globalmask.checkpoint import ModelSpec, save_model
    from globalmask.masks import Recipe
    from globalmask.model import NetConfig
    from globalmask.preprocess import PreprocessConfig

    spec = ModelSpec(
        "ct",
        Recipe.parse(None),
        PreprocessConfig(spacing=(2.0, 2.0, 2.5)),
        {"background": 0, "left": 1, "right": 2},
        NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
        (16, 16, 16),
    )
    return save_model(folder / "model.pt", spec, spec.build().state_dict())


def test_overwrite_never_replaces_a_users_file(tmp_path, capsys):
    """Issue 25: predict --out DATASET/labelsTr --overwrite replaced ground truth; evaluate --overwrite
    wrote summary.csv over the user's own; the refusals pointed at the flag."""
    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(16, 16, 12))
    model = _tiny_model(tmp_path)
    before = _sha(ds)
    argv = ["predict", str(model), str(ds / "imagesTr"), "--out", str(ds / "labelsTr"), "--overwrite",
            "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "datasets are read-only" in err and "(or pass --overwrite" not in err
    assert _sha(ds) == before
    # the user's own summary.csv in a foreign folder: --overwrite writes beside files, never over them
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "summary.csv").write_text("my numbers\n", encoding="utf-8")
    assert main(["masks", str(ds), "--recipe", "threshold", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), str(ds / "labelsTr"), "--out", str(foreign), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "summary.csv already exists there and globalmask did not write it" in err and "pass --overwrite" not in err
    assert (foreign / "summary.csv").read_text(encoding="utf-8") == "my numbers\n" and not (
        foreign / "metrics.csv"
    ).exists()
    # a prediction folder globalmask did not write is an input of evaluate: --overwrite does not open it
    hand = tmp_path / "hand"
    hand.mkdir()
    for p in (tmp_path / "m").glob("*.nii.gz"):
        (hand / p.name).write_bytes(p.read_bytes())
    (hand / "summary.csv").write_text("mine\n", encoding="utf-8")
    assert main(["evaluate", str(hand), str(ds / "labelsTr"), "--overwrite"]) == 2
    assert "is an input of evaluate" in capsys.readouterr().err
    assert (hand / "summary.csv").read_text(encoding="utf-8") == "mine\n" and not (hand / "metrics.csv").exists()


def test_a_globalmask_folder_replaces_its_own_files_and_no_others(tmp_path, capsys):
    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(16, 16, 12))
    out = tmp_path / "m"
    assert main(["masks", str(ds), "--recipe", "threshold", "--out", str(out)]) == 0
    assert guard.written_files(out) == {"case_000.nii.gz", "case_001.nii.gz"}
    assert main(["masks", str(ds), "--recipe", "body", "--out", str(out)]) == 0  # its own files: replaced
    # a file the marker does not list is never replaced, with or without --overwrite
    (out / "extra").mkdir()
    capsys.readouterr()
    assert main(["masks", str(ds / "imagesTr" / "case_000_0000.nii.gz"), "--out", str(out / "extra")]) == 0
    (out / "extra" / "case_000.nii.gz").unlink()
    (out / "extra" / "case_000.nii.gz").write_text("mine", encoding="utf-8")
    data = json.loads((out / "extra" / guard.MARKER_NAME).read_text(encoding="utf-8"))
    (out / "extra" / guard.MARKER_NAME).write_text(json.dumps({**data, "files": []}), encoding="utf-8")
    assert (
        main(["masks", str(ds / "imagesTr" / "case_000_0000.nii.gz"), "--out", str(out / "extra"), "--overwrite"]) == 2
    )
    assert "case_000.nii.gz already exists there and globalmask did not write it" in capsys.readouterr().err
    assert (out / "extra" / "case_000.nii.gz").read_text(encoding="utf-8") == "mine"


def test_two_inputs_on_one_output_name_are_refused_before_any_work(tmp_path, capsys):
    """Issue 25: masks on scan.nii and scan.nii.gz wrote one mask over the other (rc 0, 'wrote 2 masks')."""
    import nibabel as nib
    import numpy as np

    folder = tmp_path / "scans"
    folder.mkdir()
    ct = np.full((12, 12, 8), -1000, np.int16)
    ct[3:9, 3:9, 2:6] = 400
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(folder / "scan.nii"))
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(folder / "scan.nii.gz"))
    assert main(["masks", str(folder), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "scan.nii and" in err and "scan.nii.gz would both be written to scan.nii.gz" in err
    assert not (tmp_path / "m").exists()


def test_evaluate_defaults_to_a_prediction_folder_only_when_globalmask_wrote_it(tmp_path, capsys):
    ds = make_tiny_dataset(tmp_path / "ds", n=2, shape=(16, 16, 12))
    # masks are 0/1 label maps: a stand-in for predictions written by globalmask
    assert main(["masks", str(ds), "--recipe", "threshold", "--out", str(tmp_path / "m")]) == 0
    assert main(["evaluate", str(tmp_path / "m"), str(ds / "labelsTr")]) == 0
    assert (tmp_path / "m" / "metrics.csv").is_file()
    # the same files copied by hand into a folder globalmask did not create: --out is required
    hand = tmp_path / "hand"
    hand.mkdir()
    for p in (tmp_path / "m").glob("*.nii.gz"):
        (hand / p.name).write_bytes(p.read_bytes())
    capsys.readouterr()
    assert main(["evaluate", str(hand), str(ds / "labelsTr")]) == 2
    assert "--out" in capsys.readouterr().err and not (hand / "metrics.csv").exists()


# ----------------------------------------------------------------------------------------------
# one writer per folder


HOLDER = """
import sys, time
sys.path.insert(0, {src!r})
from globalmask.guard import RunLock
with RunLock({folder!r}, "train"):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(src=SRC, folder=str(folder))], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_lock(tmp_path):
    folder = tmp_path / "run"
    proc = _hold_lock(folder)
    try:
        holder = guard.read_lock(folder)
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname() and holder["command"] == "train"
        with pytest.raises(guard.LockedError, match=f"pid {proc.pid}"):
            guard.RunLock(folder, "predict").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)  # dies holding the lock: the file stays, stale
        proc.wait()
    assert (folder / guard.LOCK_NAME).exists()
    with guard.RunLock(folder, "train") as lock:
        assert guard.read_lock(folder)["pid"] == os.getpid()
        with guard.RunLock(folder, "train"):  # re-entrant in one process
            pass
        assert lock.path.exists()
    assert not (folder / guard.LOCK_NAME).exists()


def test_lock_written_on_another_host_is_not_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / guard.LOCK_NAME).write_text(
        json.dumps({"host": "other-node", "pid": 4242, "command": "study"}), encoding="utf-8"
    )
    with pytest.raises(guard.LockedError, match=r"other-node.*delete"):
        guard.RunLock(folder).acquire()


def test_second_train_on_the_same_folder_is_refused(tmp_path, capsys):
    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(16, 16, 12))
    proc = _hold_lock(tmp_path / "run")
    try:
        rc = main(["train", str(ds), "--out", str(tmp_path / "run"), "--steps", "2", "--channels", "4", "8",
                   "--device", "cpu"])
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"pid {proc.pid}" in err[0] and "another globalmask train" in err[0]
    assert not (tmp_path / "run" / "config.json").exists()


# ----------------------------------------------------------------------------------------------
# interrupts, leftovers, full disks


def test_sigterm_becomes_an_exception_that_cleans_up(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(guard.Interrupted) as info, guard.stop_on_signals(), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert info.value.signum == signal.SIGTERM and isinstance(info.value, KeyboardInterrupt)
    assert list(tmp_path.iterdir()) == []  # neither the temporary nor the target file
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_leftover_temp_files_are_removed(tmp_path):
    (tmp_path / ".tmp-model.pt.abc.pt").write_bytes(b"half")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".tmp-x.nii.gz").write_bytes(b"half")
    (tmp_path / "keep.nii.gz").write_bytes(b"whole")
    assert [p.name for p in guard.remove_temp_files(tmp_path)] == [".tmp-model.pt.abc.pt"]
    assert [p.name for p in guard.remove_temp_files(tmp_path, recursive=True)] == [".tmp-x.nii.gz"]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.nii.gz"]


def test_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    save_atomic({"step": 10, "w": torch.arange(4)}, last)
    before = last.read_bytes()

    def full_disk(obj, f):  # torch's zip writer fails like this when the disk fills mid-write
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0:"
            " file write failed"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        WriteError, match=r"could not write last\.pt.*file write failed.*previous last\.pt is unchanged"
    ) as info:
        save_atomic({"step": 20}, last)
    assert info.value.exit_code == 1
    assert last.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["step"] == 10


def test_no_space_left_on_device_is_reported_and_nothing_replaced(tmp_path, monkeypatch):
    target = write_text(tmp_path / "summary.csv", "old\n")

    def enospc(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", enospc)
    with pytest.raises(WriteError, match=r"No space left on device.*previous summary\.csv is unchanged"):
        write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text(encoding="utf-8") == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_corrupt_resume_state_is_a_clear_error(tmp_path):
    from globalmask.model import NetConfig
    from globalmask.training import TrainConfig, train

    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(16, 16, 12))
    cfg = TrainConfig(
        mode="ct",
        steps=4,
        val_every=2,
        checkpoint_every=2,
        net=NetConfig(channels=(4, 8), strides=(2,), num_res_units=0),
    )
    train(ds, tmp_path / "run", cfg, progress=False, device="cpu", stop_after=2)
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"last\.pt: cannot read the resume state.*delete it"):
        train(ds, tmp_path / "run", cfg, progress=False, device="cpu", resume=True)
    assert not (tmp_path / "run" / guard.LOCK_NAME).exists()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_train_stopped_by_a_signal_leaves_nothing_half_done_and_resumes_exactly(tmp_path, sig):
    ds = make_tiny_dataset(tmp_path / "ds", n=6, shape=(24, 24, 20))
    args = ["train", str(ds), "--mode", "ct", "--seed", "3", "--steps", "40", "--val-every", "10",
            "--checkpoint-every", "2", "--channels", "4", "8", "16", "--res-units", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "globalmask.cli"]
    subprocess.run([*cmd, *args, "--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True)

    run = tmp_path / "run"
    # The child starts with SIGINT at its default: a disposition of "ignored" is inherited across
    # exec (Unix keeps it for background jobs), and native code loaded earlier in this test process
    # (Ray's core worker) can leave SIGINT ignored at the OS level, where Python cannot see it.
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    err = proc.communicate()[1]
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err
    # (tqdm may redraw after it)
    assert any(line.startswith("globalmask train: interrupted") for line in err.splitlines())
    assert not (run / "done.json").exists(), "the run finished before the signal"
    leftovers = [p.name for p in run.iterdir() if p.name.startswith((".tmp-", guard.LOCK_NAME))]
    assert leftovers == []

    done = subprocess.run([*cmd, *args, "--out", str(run), "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)
    b = torch.load(run / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 40
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    assert a["best_step"] == b["best_step"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


# ----------------------------------------------------------------------------------------------
# issue 29: a lock left by a crash whose process id now belongs to another process


def _start_ticks(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (the process's start time in clock ticks), read independently."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    return text[text.rindex(")") + 2 :].split()[19]


@pytest.fixture()
def other_process():
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("needs Linux /proc to tell a reused process id from its holder")
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _lock_file(folder: Path, **holder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / guard.LOCK_NAME).write_text(
        json.dumps({"host": socket.gethostname(), "command": "train", "started": "2026-12-01T10:00:00", **holder}),
        encoding="utf-8",
    )


def test_a_crashed_runs_lock_is_taken_over_when_its_pid_now_belongs_to_another_process(tmp_path, other_process):
    """Issue 29: the crashed holder's PID was reused (a live process, started at another time): the
    lock is stale and taken over, not refused forever."""
    folder = tmp_path / "run"
    _lock_file(folder, pid=other_process.pid, start=str(int(_start_ticks(other_process.pid)) - 100))
    with guard.RunLock(folder, "predict"):
        holder = guard.read_lock(folder)
        assert holder["pid"] == os.getpid() and holder["command"] == "predict"
        assert holder["start"] == _start_ticks(os.getpid())  # what the next process compares with
    assert not (folder / guard.LOCK_NAME).exists()


def test_a_live_holder_recorded_in_the_lock_file_is_refused_even_without_its_flock(tmp_path, other_process):
    """Where flock is not authoritative (NFS), the recorded holder alive with its own start time keeps
    the folder; a dead PID does not."""
    folder = tmp_path / "run"
    _lock_file(folder, pid=other_process.pid, start=_start_ticks(other_process.pid))
    with pytest.raises(guard.LockedError, match=rf"train \(pid {other_process.pid} on {socket.gethostname()}.*delete"):
        guard.RunLock(folder, "predict").acquire()
    assert guard.read_lock(folder)["pid"] == other_process.pid  # left as it was
    dead = subprocess.Popen(["true"])
    dead.wait()
    for start in ({"start": "1"}, {}):  # a dead holder, also one written by a release that recorded no start time
        _lock_file(folder, pid=dead.pid, **start)
        with guard.RunLock(folder, "train"):
            assert guard.read_lock(folder)["pid"] == os.getpid()


def test_dataset_parts_and_input_folders_are_named_as_what_they_are(tmp_path):
    """Issue 29 (guard mutation survivors): every nnU-Net part folder (labelsTs too) is a dataset; an
    images/ folder is one only beside a labels/ folder; an output inside a plain input folder says
    "input folder", inside a dataset's "input dataset folder"."""
    for part in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (tmp_path / "nn" / part).mkdir(parents=True)
        assert guard.is_dataset_folder(tmp_path / "nn" / part), part
    (tmp_path / "solo" / "images").mkdir(parents=True)
    assert not guard.is_dataset_folder(tmp_path / "solo" / "images")
    (tmp_path / "solo" / "labels").mkdir()
    assert guard.is_dataset_folder(tmp_path / "solo" / "images") and guard.is_dataset_folder(
        tmp_path / "solo" / "labels"
    )
    plain = tmp_path / "scans"
    plain.mkdir()
    write_text(plain / "a.nii.gz", "x")
    with pytest.raises(OutputError, match=r"--out is the input folder .*scans; inputs are read-only"):
        guard.check_output_dir(plain, [plain / "a.nii.gz"])
    with pytest.raises(OutputError, match=r"--out is inside the input dataset folder .*labelsTs"):
        guard.check_output_dir(tmp_path / "nn" / "labelsTs" / "o", [tmp_path / "nn" / "labelsTs"])


def test_a_lock_taken_three_times_in_one_process_is_held_until_the_last_release(tmp_path):
    folder = tmp_path / "run"
    outer = guard.RunLock(folder, "study").acquire()
    middle = guard.RunLock(folder, "study").acquire()
    inner = guard.RunLock(folder, "study").acquire()
    inner.release()
    middle.release()
    assert (folder / guard.LOCK_NAME).exists() and guard.read_lock(folder)["pid"] == os.getpid()
    with guard.RunLock(folder, "study"):  # still this process's: taken again, not refused as another writer's
        pass
    outer.release()
    assert not (folder / guard.LOCK_NAME).exists()


def test_a_lock_file_removed_while_it_was_being_taken_is_taken_afresh(tmp_path, monkeypatch):
    """The holder released (and removed) the lock file between our open and our flock: retry on a
    new file instead of giving up."""
    folder = tmp_path / "run"
    folder.mkdir()
    lock_path = str(folder / guard.LOCK_NAME)
    real_stat, calls = os.stat, []

    def stat(path, *args, **kwargs):
        if str(path) == lock_path and not calls:
            calls.append(path)
            raise FileNotFoundError(path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(guard.os, "stat", stat)
    with guard.RunLock(folder, "train"):
        assert calls and guard.read_lock(folder)["pid"] == os.getpid()
