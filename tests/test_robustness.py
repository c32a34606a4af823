"""Readers never crash or hang on malformed files; training survives kill -9."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globalmask.errors import GlobalmaskError
from globalmask.io import read_volume

FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_nifti_bytes() -> bytes:
    arr = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 1000
    img = nib.Nifti1Image(arr, np.diag([1.5, 1.5, 3.0, 1.0]))
    return img.to_bytes()


VALID = _valid_nifti_bytes()


def _read_or_clear_error(path) -> None:
    """The only acceptable outcomes: a Volume with a sane geometry, or a GlobalmaskError."""
    try:
        vol = read_volume(path)
    except GlobalmaskError as exc:
        assert str(path.name) in str(exc)
        return
    assert vol.array.ndim == 3
    assert np.all(np.isfinite(vol.affine))


@FUZZ
@given(data=st.binary(min_size=0, max_size=2000), suffix=st.sampled_from([".nii", ".nii.gz", ".nrrd", ".mha"]))
def test_random_bytes_give_a_clear_error(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(gzip.compress(data) if suffix == ".nii.gz" and data[:1] == b"\x00" else data)
    _read_or_clear_error(path)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 347), st.integers(0, 255)), min_size=1, max_size=12), compress=st.booleans())
def test_corrupted_nifti_headers_give_a_volume_or_a_clear_error(tmp_path, edits, compress):
    raw = bytearray(VALID)
    for offset, value in edits:
        raw[offset] = value
    path = tmp_path / ("h.nii.gz" if compress else "h.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    _read_or_clear_error(path)


@FUZZ
@given(
    dims=st.lists(st.integers(-5, 2**31 - 1), min_size=3, max_size=3),
    pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=3, max_size=3),
)
def test_absurd_nifti_dimensions_and_spacings(tmp_path, dims, pixdim):
    """Huge declared sizes must be refused before allocating; odd spacings named as such."""
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(VALID), check=False)
    hdr["dim"][1:4] = [max(-32768, min(32767, d)) for d in dims]
    hdr["pixdim"][1:4] = pixdim
    raw = hdr.binaryblock + b"\x00" * 4 + VALID[352:]
    path = tmp_path / "d.nii"
    path.write_bytes(raw)
    _read_or_clear_error(path)


# ----------------------------------------------------------------------------------------------
# kill -9 during training, then --resume


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    from globalmask.dataset import load_dataset, make_split, save_split
    from globalmask.phantom import make_phantom_dataset

    root = make_phantom_dataset(tmp_path / "ph", kind="headneck", cases=6, seed=5, shape=(32, 32, 32))
    save_split(make_split(load_dataset(root).cases, seed=0, fractions=(4, 1, 1)), root / "splits.json")
    args = ["train", str(root), "--mode", "ct+gbm", "--train-cases", "3", "--seed", "2", "--steps", "60", "--val-every", "20",
            "--checkpoint-every", "5", "--channels", "8", "16", "32", "--res-units", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "globalmask.cli"]

    # uninterrupted reference run
    subprocess.run([*cmd, *args, "--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True)

    # the same run, killed as soon as a resumable checkpoint exists
    proc = subprocess.Popen([*cmd, *args, "--out", str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "run" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "done.json").exists(), "the run finished before it could be killed"
    killed_at = torch.load(last, weights_only=False)["step"]
    assert 0 < killed_at < 60

    done = subprocess.run([*cmd, *args, "--out", str(tmp_path / "run"), "--resume"], env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["step"] == b["step"] == 60
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    assert a["best_step"] == b["best_step"] and abs(a["best"] - b["best"]) < 1e-6
