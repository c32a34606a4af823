"""Training data: load and check labelled cases, preprocess once (with an on-disk cache), sample patches.

Everything the training loop draws per step comes from arrays already in memory: NIfTI files are
read once per case, preprocessed once, and (with ``cache_dir``) never again across runs - the
study trains hundreds of models on the same cases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .dataset import Case
from .errors import DatasetError
from .io import Volume, atomic_path, check_same_grid, read_volume
from .masks import Recipe
from .preprocess import Geometry, PreparedCase, PreprocessConfig, prepare_case


def load_case(case: Case, labels: dict[str, int] | None = None) -> tuple[Volume, Volume | None]:
    """Read a case's CT and label and check that they belong together.

    Parameters
    ----------
    case : Case
        The case's files.
    labels : dict[str, int] or None
        The declared ``{name: value}`` labels; values outside them are refused when given.

    Returns
    -------
    ct : Volume
        The CT.
    label : Volume or None
        The label map as uint8 on the CT's grid, or None for an unlabelled case.
    """
    ct = read_volume(case.image)
    if case.label is None:
        return ct, None
    label = read_volume(case.label)
    check_same_grid(label, ct, "label", f"image {case.image.name}", "they are not on the same voxel grid")
    arr = np.asarray(label.array)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DatasetError("label map has non-integer values", case.label)
        arr = arr.astype(np.int32)
    if labels is not None:
        found = np.unique(arr)
        undeclared = sorted({int(v) for v in found} - set(labels.values()))
        if undeclared:
            raise DatasetError(
                f"label values {undeclared} are not declared in dataset.json labels {sorted(labels.values())}",
                case.label,
            )
    label = Volume(arr.astype(np.uint8, copy=False), label.affine, label.path)
    return ct, label


#: nnU-Net's CT normalisation range: these percentiles of the training cases' labelled voxels.
PERCENTILE_WINDOW = (0.5, 99.5)


def percentile_window(
    cases: Sequence[Case], percentiles: tuple[float, float] = PERCENTILE_WINDOW, samples_per_case: int = 10_000
) -> tuple[float, float]:
    """CT clip window from the labelled voxels of the training cases (nnU-Net's CT scheme).

    Why: a fixed -1000..1000 HU window spends half of the network's input range on air and fat;
    clipping at the structures' own intensity range gives soft tissue more of it, and on OpenKBP it
    reached the validation plateau sooner and higher (``benchmarks/convergence.md``). Each case
    contributes an evenly strided sample of about ``samples_per_case`` labelled voxels, so large
    scans do not outvote small ones and the result does not depend on the order of the cases.
    Only training cases may be passed: the window is part of what the model learns from.

    Parameters
    ----------
    cases : sequence of Case
        The labelled training cases.
    percentiles : tuple of float
        The (low, high) percentiles, in [0, 100].
    samples_per_case : int
        About how many labelled voxels each case contributes.

    Returns
    -------
    tuple of float
        The (low, high) window, HU.
    """
    if not cases:
        raise DatasetError("a percentile CT window needs at least one training case")
    samples = []
    for case in cases:
        ct, label = load_case(case)
        if label is None:
            raise DatasetError("a percentile CT window needs labelled training cases", case.image)
        values = np.asarray(ct.array)[np.asarray(label.array) > 0]
        samples.append(values[:: max(1, values.size // samples_per_case)])
    pooled = np.concatenate(samples).astype(np.float64)
    if pooled.size == 0:
        raise DatasetError(
            f"no labelled voxels in the training cases {[c.id for c in cases]}: cannot derive a percentile CT window"
        )
    lo, hi = (float(v) for v in np.percentile(pooled, percentiles))
    if not lo < hi:
        raise DatasetError(
            f"the labelled voxels of the training cases span one value ({lo} HU): cannot derive a CT window"
        )
    return lo, hi


def _cache_key(case: Case, recipe: Recipe, config: PreprocessConfig) -> str:
    def stamp(p: Path | None) -> list:
        if p is None:
            return [None]
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]

    blob = json.dumps([stamp(case.image), stamp(case.label), recipe.to_dict(), config.to_dict(), 1], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _save_prepared(path: Path, pc: PreparedCase) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            ct=pc.ct.astype(np.float16),  # normalised CT in [-1, 1]: float16 keeps 1e-3 precision at half the size
            gbm=pc.gbm,
            label=pc.label if pc.label is not None else np.zeros(0, np.uint8),
            geometry=np.frombuffer(json.dumps(pc.geometry.to_dict()).encode(), dtype=np.uint8),
        )


def _load_prepared(path: Path, case_id: str) -> PreparedCase:
    with np.load(path) as z:
        label = z["label"]
        return PreparedCase(
            case_id,
            z["ct"].astype(np.float32),
            z["gbm"],
            Geometry.from_dict(json.loads(z["geometry"].tobytes().decode())),
            label if label.size else None,
        )


def prepare_cases(
    cases: Sequence[Case],
    recipe: Recipe,
    config: PreprocessConfig,
    labels: dict[str, int] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    desc: str = "preprocess",
) -> list[PreparedCase]:
    """Preprocess cases onto the network grid, reusing ``cache_dir`` entries when inputs are unchanged.

    Cached CT is stored as float16, so a case read back from the cache differs from a freshly
    prepared one by at most ~5e-4 in normalised units (0.5 HU): use the same cache for every
    model that is compared.

    Parameters
    ----------
    cases : sequence of Case
        The cases to preprocess.
    recipe : Recipe
        The GBM recipe.
    config : PreprocessConfig
        Spacing, window and crop.
    labels : dict[str, int] or None
        The declared labels, checked against each label map.
    cache_dir : str or Path or None
        Folder of cached preprocessed cases (created as needed); None for no cache.
    progress : bool
        Show a progress bar.
    desc : str
        The progress bar's label.

    Returns
    -------
    list of PreparedCase
        The cases on the network grid, in order.
    """

    out: list[PreparedCase] = []
    cache = Path(cache_dir) if cache_dir is not None else None
    for case in tqdm(cases, desc=desc, disable=not progress, leave=False):
        path = cache / f"{case.id}-{_cache_key(case, recipe, config)}.npz" if cache else None
        if path is not None and path.exists():
            out.append(_load_prepared(path, case.id))
            continue
        ct, label = load_case(case, labels)
        pc = prepare_case(ct, recipe, config, label, case.id)
        if path is not None:
            _save_prepared(path, pc)
            pc = _load_prepared(path, case.id)  # identical whether it was cached before or not
        out.append(pc)
    return out


def check_structures_present(prepared: Iterable[PreparedCase], labels: dict[str, int], where: str) -> None:
    """Refuse to train when a declared structure is empty in every training case.

    Parameters
    ----------
    prepared : iterable of PreparedCase
        The prepared training cases.
    labels : dict[str, int]
        The declared ``{name: value}`` labels.
    where : str
        What the error names (the dataset).
    """
    present: set[int] = set()
    for pc in prepared:
        if pc.label is not None:
            present |= set(np.unique(pc.label).tolist())
    missing = [name for name, v in labels.items() if v != 0 and v not in present]
    if missing:
        raise DatasetError(
            f"structure(s) {missing} are declared in dataset.json but empty in every training case "
            "(after cropping to the body); a network cannot learn them - remove them from 'labels' or add cases",
            where,
        )


# ----------------------------------------------------------------------------------------------
# patch sampling


def auto_patch_size(
    shapes: Sequence[Sequence[int]], divisor: int, max_voxels: int, spatial_dims: int = 3
) -> tuple[int, int, int]:
    """Smallest multiple of ``divisor`` covering the largest case per axis, shrunk to fit ``max_voxels``.

    When it covers the cases, training sees whole volumes (what a GBM-only model needs to read
    global position); otherwise patches as large as the budget allows, largest axis first.

    Parameters
    ----------
    shapes : sequence of sequence of int
        The cases' network-grid shapes.
    divisor : int
        The network's size divisor (:attr:`NetConfig.divisor`).
    max_voxels : int
        The largest patch, in voxels.
    spatial_dims : int
        3, or 2 for axial slices (last side 1).

    Returns
    -------
    tuple of int
        The patch size.
    """
    big = np.max(np.asarray(shapes), axis=0).astype(int)
    patch = [int(np.ceil(s / divisor) * divisor) for s in big]
    if spatial_dims == 2:
        patch[2] = 1
    while int(np.prod(patch)) > max_voxels:
        axes = [0, 1] if spatial_dims == 2 else [0, 1, 2]
        ax = max(axes, key=lambda a: patch[a])
        if patch[ax] <= divisor:
            break
        patch[ax] -= divisor
    return tuple(patch)  # type: ignore[return-value]


class PatchSampler:
    """Random patches from in-memory cases, a fraction centred on foreground (nnU-Net style).

    ``fg_prob`` of the patches are centred on a voxel of a randomly chosen structure present in
    the chosen case; the rest are placed uniformly. When a patch is larger than the case, the case
    lands at a random offset inside it (a translation augmentation) and the rest is padded with
    ``pad_values`` (air for CT, 0 for masks and labels).

    Parameters
    ----------
    inputs : sequence of numpy.ndarray
        Each case's network input, (C, X, Y, Z).
    labels : sequence of numpy.ndarray
        Each case's label map, (X, Y, Z).
    patch_size : sequence of int
        The patch size (voxels).
    pad_values : sequence of float or numpy.ndarray
        Per channel: the value outside a case.
    fg_prob : float
        Fraction of patches centred on foreground.
    rng : numpy.random.Generator
        The random source (its state is checkpointed).
    max_fg_points : int
        Most foreground voxels kept per structure and case to draw centres from.
    """

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: Sequence[int],
        pad_values: Sequence[float] | np.ndarray,
        fg_prob: float,
        rng: np.random.Generator,
        max_fg_points: int = 20000,
    ):
        if len(inputs) == 0:
            raise DatasetError("no training cases to sample from")
        self.inputs, self.labels = list(inputs), list(labels)
        self.patch = tuple(int(p) for p in patch_size)
        self.pad = np.asarray(pad_values, dtype=np.float32)
        self.fg_prob = fg_prob
        self.rng = rng
        self.fg: list[dict[int, np.ndarray]] = []
        for lab in self.labels:
            per_class: dict[int, np.ndarray] = {}
            for c in np.unique(lab):
                if c == 0:
                    continue
                pts = np.argwhere(lab == c)
                if len(pts) > max_fg_points:  # a fixed subsample keeps memory bounded
                    pts = pts[np.linspace(0, len(pts) - 1, max_fg_points).astype(int)]
                per_class[int(c)] = pts
            self.fg.append(per_class)

    def _start(self, shape: tuple[int, ...], center: np.ndarray | None) -> list[int]:
        start = []
        for ax, (n, p) in enumerate(zip(shape, self.patch)):
            lo, hi = min(0, n - p), max(0, n - p)
            if center is None:
                s = int(self.rng.integers(lo, hi + 1))
            else:
                s = int(np.clip(center[ax] - p // 2 + self.rng.integers(-(p // 4), p // 4 + 1), lo, hi))
            start.append(s)
        return start

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, *patch) float32 inputs and (B, 1, *patch) uint8 labels.

        Parameters
        ----------
        batch : int
            Number of patches.

        Returns
        -------
        inputs : numpy.ndarray
            float32, (B, C, *patch).
        labels : numpy.ndarray
            uint8, (B, 1, *patch).
        """
        c = self.inputs[0].shape[0]
        x = np.empty((batch, c, *self.patch), dtype=np.float32)
        x[:] = self.pad.reshape(1, c, *([1] * len(self.patch)))
        y = np.zeros((batch, 1, *self.patch), dtype=np.uint8)
        for b in range(batch):
            i = int(self.rng.integers(len(self.inputs)))
            img, lab = self.inputs[i], self.labels[i]
            center = None
            if self.fg[i] and self.rng.random() < self.fg_prob:
                classes = sorted(self.fg[i])
                pts = self.fg[i][classes[int(self.rng.integers(len(classes)))]]
                center = pts[int(self.rng.integers(len(pts)))]
            start = self._start(lab.shape, center)
            src: tuple[slice, ...] = tuple(
                slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, self.patch, lab.shape)
            )
            dst: tuple[slice, ...] = tuple(
                slice(max(-s, 0), max(-s, 0) + (sl.stop - sl.start)) for s, sl in zip(start, src)
            )
            # numpy's stubs reject a starred slice tuple
            x[(b, slice(None), *dst)] = img[(slice(None), *src)]  # type: ignore[index]
            y[(b, 0, *dst)] = lab[src]  # type: ignore[index]
        return x, y

    def state(self) -> dict[str, Any]:
        """The random generator's state, to checkpoint.

        Returns
        -------
        dict[str, Any]
            The bit generator's state.
        """
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state`, so a resumed run draws the same patches.

        Parameters
        ----------
        state : dict[str, Any]
            The bit generator's state.
        """
        self.rng.bit_generator.state = state
