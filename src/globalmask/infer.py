"""Segment new scans with a trained checkpoint: CT file(s) in, label maps on the input's grid out.

The checkpoint carries the recipe, preprocessing and input mode, so :class:`Predictor` makes the
GBM itself exactly as in training, runs MONAI's sliding-window inference on the network grid and
maps class probabilities back onto the input's own shape and affine.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import ModelSpec, load_model
from .checks import RECIPE_SUGGESTION
from .errors import GeometryError, GlobalmaskError, InputFileError, IntensityError, OutputError
from .io import (
    Volume,
    case_id_from_path,
    is_volume_path,
    read_volume,
    same_geometry,
    volume_suffix,
    write_json,
    write_volume,
)
from .model import InputMode, make_input
from .preprocess import PreparedCase, prepare_case, restore_volume
from .progress import bars_enabled, note


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error.

    Parameters
    ----------
    device : str or torch.device
        'auto', 'cpu', 'cuda' or 'cuda:N', or a device (returned as is).

    Returns
    -------
    torch.device
        The device.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GlobalmaskError("--device cuda was asked for, but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise GlobalmaskError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing on CPU.

    On CPUs without native bf16 autocast is many times *slower*, so it is never used there.

    Parameters
    ----------
    device : torch.device
        Where the network runs.
    enabled : bool
        False for full precision everywhere.

    Returns
    -------
    contextlib.AbstractContextManager
        The autocast context, or a null context.
    """
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def pad_values(mode: InputMode) -> np.ndarray:
    """Per-channel value of 'nothing there': air (-1 after normalisation) for CT, 0 for masks.

    Parameters
    ----------
    mode : InputMode
        The network's input channels.

    Returns
    -------
    numpy.ndarray
        Shape (C,): the value per channel.
    """
    ct_air = -1.0
    dummy_ct = np.full((1, 1, 1), ct_air, dtype=np.float32)
    dummy_gbm = np.zeros((1, 1, 1), dtype=np.uint8)
    return make_input(mode, dummy_ct, dummy_gbm).reshape(-1)


def _pad_to(x: torch.Tensor, size: Sequence[int], values: np.ndarray) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad (C, *spatial) symmetrically to at least ``size`` with per-channel values."""
    spatial = x.shape[1:]
    before = [max(0, (s - n) // 2) for n, s in zip(spatial, size)]
    after = [max(0, s - n - b) for n, s, b in zip(spatial, size, before)]
    if not any(before) and not any(after):
        return x, tuple(slice(None) for _ in spatial)
    out = torch.empty(
        (x.shape[0], *[n + b + a for n, b, a in zip(spatial, before, after)]), dtype=x.dtype, device=x.device
    )
    out[:] = torch.as_tensor(values, dtype=x.dtype, device=x.device).view(-1, *([1] * len(spatial)))
    inner = tuple(slice(b, b + n) for b, n in zip(before, spatial))
    out[(slice(None), *inner)] = x
    return out, inner


@torch.inference_mode()
def sliding_window_probs(
    net: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    patch_size: Sequence[int],
    spatial_dims: int,
    pad: np.ndarray,
    device: torch.device,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Softmax probabilities (K, *grid) for one case's input (C, *grid), on the CPU.

    3D networks slide over the volume; 2D networks run over axial slices (the last axis) as a
    batch. Inputs smaller than the patch are padded with air / zeros like in training.

    Parameters
    ----------
    net : torch.nn.Module
        The network, on ``device``.
    image : numpy.ndarray or torch.Tensor
        The input, (C, X, Y, Z) on the network grid.
    patch_size : sequence of int
        The window size (voxels; two sides for a 2D network).
    spatial_dims : int
        3, or 2 for a network over axial slices.
    pad : numpy.ndarray
        Shape (C,): the value per channel outside the volume.
    device : torch.device
        Where the network runs.
    overlap : float
        Overlap of neighbouring windows, in [0, 1).
    sw_batch_size : int
        Windows per forward pass (3D).
    amp : bool
        Mixed precision on CUDA.

    Returns
    -------
    torch.Tensor
        float32 probabilities, (K, X, Y, Z), on the CPU.
    """
    from monai.inferers import sliding_window_inference

    x = torch.as_tensor(image, dtype=torch.float32)
    x, inner = _pad_to(x, patch_size if spatial_dims == 3 else (*patch_size[:2], 1), pad)
    x = x.to(device)
    with autocast(device, amp):
        if spatial_dims == 3:
            logits = sliding_window_inference(
                x[None], tuple(patch_size), sw_batch_size, net, overlap=overlap, mode="gaussian"
            )[0]
        else:
            slices = x.permute(3, 0, 1, 2)  # (Z, C, X, Y)
            chunks: list[torch.Tensor] = []
            for k in range(0, slices.shape[0], 32):
                chunks.append(
                    torch.as_tensor(
                        sliding_window_inference(
                            slices[k : k + 32], tuple(patch_size[:2]), 32, net, overlap=overlap, mode="gaussian"
                        )
                    )
                )
            logits = torch.cat(chunks).permute(1, 2, 3, 0)  # (K, X, Y, Z)
    probs = F.softmax(logits.float(), dim=0)
    return probs[(slice(None), *inner)].cpu()


class Predictor:
    """A loaded model, ready to segment volumes; load once, predict many.

    Parameters
    ----------
    checkpoint : str or Path
        The model file (``model.pt``).
    device : str
        'auto', 'cpu' or 'cuda'.
    expect_mode : InputMode or None
        Refuse a checkpoint trained with another input mode.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", expect_mode: InputMode | None = None):
        self.checkpoint = Path(checkpoint)
        self.spec: ModelSpec
        self.spec, self.net = load_model(checkpoint, expect_mode)
        self.device = resolve_device(device)
        self.net.to(self.device)
        self._pad = pad_values(self.spec.mode)
        self._found = 0

    def probabilities(self, prepared: PreparedCase) -> torch.Tensor:
        """Class probabilities of a prepared case on the network grid.

        Parameters
        ----------
        prepared : PreparedCase
            The case, from :meth:`prepare`.

        Returns
        -------
        torch.Tensor
            float32 probabilities, (K, *grid), on the CPU.
        """
        x = make_input(self.spec.mode, prepared.ct, prepared.gbm)
        return sliding_window_probs(
            self.net, x, self.spec.patch_size, self.spec.net.spatial_dims, self._pad, self.device, self.spec.sw_overlap
        )

    def prepare(self, ct: Volume, case_id: str = "case") -> PreparedCase:
        """Bring a CT onto this model's network grid with its recipe and preprocessing.

        Parameters
        ----------
        ct : Volume
            The CT in HU.
        case_id : str
            The id the prepared case carries.

        Returns
        -------
        PreparedCase
            The case on the network grid (no label).
        """
        try:
            return prepare_case(ct, self.spec.recipe, self.spec.preprocess, None, case_id)
        except IntensityError as exc:  # predict has no --recipe: the model's recipe is fixed, say what can be done
            if RECIPE_SUGGESTION not in exc.problem:
                raise
            advice = (
                f"convert the data to Hounsfield units (this model's GBM recipe {self.spec.recipe.spec!r} is fixed at "
                "training; a model trained with --recipe otsu needs no HU)"
            )
            raise IntensityError(exc.problem.replace(RECIPE_SUGGESTION, advice), exc.path) from None

    def predict(self, ct: Volume) -> Volume:
        """Label map (uint8) with exactly ``ct``'s shape and affine.

        Parameters
        ----------
        ct : Volume
            The CT in HU.

        Returns
        -------
        Volume
            The label map.
        """
        return self._labels(ct, self.prepare(ct))

    def _labels(self, ct: Volume, prepared: PreparedCase) -> Volume:
        labels = restore_volume(self.probabilities(prepared), prepared.geometry)
        self._found += bool(np.asarray(labels.array).any())
        if not same_geometry(labels, ct):  # the promise of predict, checked with evaluate's tolerance
            raise GeometryError(
                f"label map grid {labels.shape} differs from the input grid {ct.shape} (internal error)", ct.path
            )
        return labels

    def _read(self, src: Path) -> tuple[Volume, PreparedCase]:
        ct = read_volume(src)
        return ct, self.prepare(ct)

    @staticmethod
    def _write(labels: Volume, notes: dict[str, Any], dst: Path) -> Path:
        path = write_volume(labels, dst)
        if notes:  # e.g. a DICOM series resampled on reading: say so beside the prediction
            write_json(dst.with_name(case_id_from_path(dst) + ".json"), notes)
        return path

    def predict_files(
        self, inputs: Iterable[str | Path], out_dir: str | Path, progress: bool = True, overlap: bool | None = None
    ) -> list[Path]:
        """Segment each input file/folder and write ``out_dir/<case id><suffix>``, in order.

        With ``overlap`` the next case is read and prepared, and the previous prediction written,
        in two background threads while the network runs: the same files, written in the same
        order, one case ahead at most (so memory stays bounded); errors surface as they would
        in order (an earlier case's failure first), each naming its file. ``None`` (default)
        overlaps only when the network runs on a GPU, which leaves the CPU idle meanwhile; on
        the CPU the forward pass already uses every core, and two runs on 2 cores gave -10% and
        +9% for a 10-case folder (``benchmarks/RESULTS.md``): no gain worth two more threads.

        Parameters
        ----------
        inputs : iterable of str or Path
            Volume files, DICOM folders and folders of volumes (see :func:`collect_inputs`).
        out_dir : str or Path
            The output folder; must not be an input folder.
        progress : bool
            Show a progress bar.
        overlap : bool or None
            Read and write in background threads; None: only on a GPU.

        Returns
        -------
        list of Path
            The label maps written, in input order.
        """
        if overlap is None:
            overlap = self.device.type != "cpu"
        files = collect_inputs(inputs)
        out_dir = Path(out_dir)
        targets = [out_dir / output_name(f) for f in files]
        check_outputs(files, out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        bar = bars_enabled(progress)
        pairs = tqdm(list(zip(files, targets)), desc="predict", unit="case", disable=not bar)
        self._found = 0  # predictions with any structure: none at all is worth a warning
        if not overlap:
            written = []
            for src, dst in pairs:
                ct, prepared = self._read(src)
                written.append(self._write(self._labels(ct, prepared), ct.notes, dst))
                self._note(len(written), len(targets), written[-1], bar)
        else:
            written = self._predict_overlapped(files, pairs, bar)
        if written and not self._found:
            warnings.warn(
                f"every one of the {len(written)} prediction(s) is empty (background only): are the inputs CT in "
                "Hounsfield units, "
                f"scanned like the training cases, and was the model ({self.checkpoint}) trained to its plateau?",
                UserWarning,
                stacklevel=2,
            )
        return written

    @staticmethod
    def _note(k: int, n: int, path: Path, bar: bool) -> None:
        note(f"predict {k}/{n}: wrote {path}", bar=bar)

    def _predict_overlapped(
        self, files: Sequence[Path], pairs: Iterable[tuple[Path, Path]], bar: bool = False
    ) -> list[Path]:
        written: list[Path] = []
        reader = ThreadPoolExecutor(1, thread_name_prefix="globalmask-read")
        writer = ThreadPoolExecutor(1, thread_name_prefix="globalmask-write")
        ahead: Future[tuple[Volume, PreparedCase]] | None = reader.submit(self._read, files[0]) if files else None
        behind: Future[Path] | None = None
        try:
            for i, (_, dst) in enumerate(pairs):
                assert ahead is not None
                ct, prepared = ahead.result()  # a read error is raised here, naming its file
                ahead = reader.submit(self._read, files[i + 1]) if i + 1 < len(files) else None
                labels = self._labels(ct, prepared)
                if behind is not None:
                    written.append(behind.result())
                    self._note(len(written), len(files), written[-1], bar)
                behind = writer.submit(self._write, labels, ct.notes, dst)
            if behind is not None:
                written.append(behind.result())
                self._note(len(written), len(files), written[-1], bar)
                behind = None
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            if behind is not None:
                behind.result()  # the previous case's write comes first: its error wins, as in order
            raise
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True, cancel_futures=True)
        return written


def output_name(path: Path) -> str:
    """Prediction file name for an input: nnU-Net case id, same format (DICOM -> NIfTI).

    Parameters
    ----------
    path : Path
        An input file or DICOM folder.

    Returns
    -------
    str
        The file name (a DICOM folder gives ``.nii.gz``).
    """
    suffix = volume_suffix(path) if path.is_file() else ".nii.gz"
    return case_id_from_path(path) + suffix


#: What ``predict --format`` writes beside each label map, named by case id.
OBJECT_SUFFIXES = {"nifti": (), "rtstruct": ("_rtstruct.dcm",), "dicom-seg": ("_seg.dcm",)}


def prediction_targets(files: Sequence[Path], out_dir: str | Path, fmt: str = "nifti") -> list[tuple[Path, Path]]:
    """(input, file it makes) for every file ``predict`` may write into ``out_dir``: the label map,
    a DICOM input's geometry sidecar ``<case>.json`` and the ``--format`` object, so that all of
    them are checked (never a user's file, never two inputs on one name) before any work.

    Parameters
    ----------
    files : sequence of Path
        The inputs.
    out_dir : str or Path
        The output folder.
    fmt : str
        'nifti', 'rtstruct' or 'dicom-seg'.

    Returns
    -------
    list of tuple of Path
        (input, output file) pairs.
    """
    out_dir = Path(out_dir)
    pairs: list[tuple[Path, Path]] = []
    for f in files:
        pairs.append((f, out_dir / output_name(f)))
        case = case_id_from_path(output_name(f))
        if Path(f).is_dir():
            pairs.append((f, out_dir / f"{case}.json"))
        pairs.extend((f, out_dir / f"{case}{suffix}") for suffix in OBJECT_SUFFIXES.get(fmt, ()))
    return pairs


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand the user's inputs: volume files, DICOM folders, and folders of volumes.

    Parameters
    ----------
    inputs : iterable of str or Path
        What the user named.

    Returns
    -------
    list of Path
        The volume files and DICOM folders, in order (folders expanded, sorted).
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputFileError("input not found", p)
        if p.is_file() or is_volume_path(p):
            files.append(p)
            continue
        inside = sorted(c for c in p.iterdir() if not c.name.startswith(".") and is_volume_path(c))
        if not inside:
            raise InputFileError("folder holds no volumes (.nii/.nii.gz/.nrrd/.mha/.mhd or DICOM series folders)", p)
        files.extend(inside)
    names: dict[str, Path] = {}
    for f in files:
        name = output_name(f)
        if name in names:
            raise InputFileError(f"two inputs map to the same output name {name!r}: {names[name]} and {f}", f)
        names[name] = f
    return files


def check_outputs(inputs: Sequence[Path], out_dir: Path) -> None:
    """Refuse an output folder that is (or is inside) a folder holding the user's inputs.

    Outputs are only ever written into ``out_dir``, so this also guarantees that no input file
    is overwritten.

    Parameters
    ----------
    inputs : sequence of Path
        The input files and folders.
    out_dir : Path
        The output folder.
    """
    out_res = out_dir.resolve()
    for p in inputs:
        folder = p.resolve() if p.is_dir() else p.resolve().parent
        if out_res == folder or (out_res.is_relative_to(folder) and p.is_dir()):
            raise OutputError(f"output folder is the input folder {folder}; choose a separate --out", out_dir)
