"""Simulated scanner and patient variation: the changes a CT-trained model meets in another hospital.

Every variation is a frozen dataclass that turns a CT (HU) into a varied copy on the CT's own grid
(same shape, same affine, float32), seeded per (variation, case) so that every model is tested on
identical varied scans; the input is never modified. The GBM is then recomputed from the varied CT,
as it would be in practice. Variations that move the patient also move the label map
(:meth:`Variation.apply_pair`, nearest neighbour); the others return the label unchanged.

Two generations live here:

* :class:`ScannerShift` (family ``scanner``): ``HU' = scale * HU + offset``, white Gaussian noise
  and Gaussian blur; :data:`DEFAULT_SHIFTS` are the study's committed levels (their names and
  ``to_dict`` are part of committed run records and stay as they are).
* The realistic families of :data:`VARIATION_SUITE`, one class each, levels fixed from published
  CT physics (sources in each docstring): :class:`TubeVoltage`, :class:`Dose`, :class:`Kernel`,
  :class:`SliceThickness`, :class:`Metal`, :class:`TruncatedFOV`, :class:`Pose`, and
  :class:`IodineContrast` (needs the label map; :data:`THORAX_CONTRAST` for the thorax phantom).

``variation_from_dict`` reads either generation back from its ``to_dict``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation
from skimage.transform import iradon, radon

from .errors import GlobalmaskError
from .io import Volume, same_geometry
from .masks import superior_axis

#: The lowest value of the standard 12-bit CT scale (-1024..3071): what scanners write where
#: nothing was reconstructed; used for voxels a variation empties (outside the field of view,
#: regions a pose change brings in from outside the scan).
AIR_HU = -1024.0
#: The top of the standard 12-bit CT scale: metal saturates here on scanners without an extended scale.
MAX_HU = 3071.0
#: Linear attenuation of water at a typical effective energy of a 120 kVp beam (~70 keV), 1/mm
#: (NIST XCOM, Hubbell & Seltzer, NIST SRD 126: 0.193 cm^2/g).
MU_WATER_PER_MM = 0.0193


def _rng(seed: int, name: str, case_id: str) -> np.random.Generator:
    """One generator per (seed, variation, case): every model sees the same varied scan."""
    return np.random.default_rng([seed, zlib.crc32(f"{name}/{case_id}".encode())])


# ----------------------------------------------------------------------------------------------
# the legacy family

SCANNER_FAMILY = "scanner"


@dataclass(frozen=True)
class ScannerShift:
    """Linear HU change, white noise and blur (the study's first, committed scanner shifts).

    Attributes
    ----------
    name : str
        The level's name (``mild``, ``moderate``, ``severe`` for :data:`DEFAULT_SHIFTS`).
    offset : float
        HU added after scaling.
    scale : float
        Factor applied to HU.
    noise : float
        Standard deviation (HU) of the white Gaussian noise added.
    blur_mm : float
        Gaussian blur sigma (mm).
    """

    name: str
    offset: float = 0.0  # HU
    scale: float = 1.0
    noise: float = 0.0  # HU, standard deviation
    blur_mm: float = 0.0  # Gaussian sigma in mm

    # properties, not class variables: the dataclass's fields stay exactly the committed ones
    @property
    def family(self) -> str:
        """The family name, ``scanner`` (a property: the dataclass's fields stay exactly the committed ones).

        Returns
        -------
        str
            :data:`SCANNER_FAMILY`.
        """
        return SCANNER_FAMILY

    @property
    def level(self) -> str:
        """The level within the family: the shift's name.

        Returns
        -------
        str
            ``name``.
        """
        return self.name

    @property
    def moves_labels(self) -> bool:
        """An intensity change never moves the patient.

        Returns
        -------
        bool
            False.
        """
        return False

    @property
    def needs_label(self) -> bool:
        """An intensity change needs no label map.

        Returns
        -------
        bool
            False.
        """
        return False

    def to_dict(self) -> dict[str, Any]:
        """The dataclass's fields (part of committed run records: kept as they are).

        Returns
        -------
        dict
            ``name``, ``offset``, ``scale``, ``noise``, ``blur_mm``.
        """
        return asdict(self)

    def apply(self, ct: Volume, seed: int = 0, case_id: str = "") -> Volume:
        """Shifted copy of ``ct`` (float32 HU); the input is never modified.

        Parameters
        ----------
        ct : Volume
            The CT (HU).
        seed : int, optional
            The study seed; with the variation's name and ``case_id`` it seeds the random draws.
        case_id : str, optional
            The case the CT belongs to (every model is tested on the same varied scan of it).

        Returns
        -------
        Volume
            The shifted CT on the same grid.
        """
        arr = np.asarray(ct.array, dtype=np.float32)
        if self.blur_mm > 0:
            sigma = [self.blur_mm / s for s in ct.spacing]
            arr = ndimage.gaussian_filter(arr, sigma)
        arr = arr * np.float32(self.scale) + np.float32(self.offset)
        if self.noise > 0:
            rng = np.random.default_rng([seed, zlib.crc32(f"{self.name}/{case_id}".encode())])
            arr = arr + rng.normal(0.0, self.noise, size=arr.shape).astype(np.float32)
        return Volume(arr, ct.affine.copy(), None)

    def apply_pair(
        self, ct: Volume, label: Volume | None, seed: int = 0, case_id: str = ""
    ) -> tuple[Volume, Volume | None]:
        """Shifted CT and the label map, which an intensity change does not move.

        Parameters
        ----------
        ct : Volume
            The CT (HU).
        label : Volume or None
            The label map on the CT's grid, or None.
        seed : int, optional
            The study seed; with the variation's name and ``case_id`` it seeds the random draws.
        case_id : str, optional
            The case the CT belongs to (every model is tested on the same varied scan of it).

        Returns
        -------
        ct : Volume
            The shifted CT.
        label : Volume or None
            ``label`` itself.
        """
        _check_label(ct, label)
        return self.apply(ct, seed, case_id), label


#: Named levels used by the study unless its configuration gives others.
DEFAULT_SHIFTS = (
    ScannerShift("mild", offset=40.0, scale=1.05, noise=15.0, blur_mm=0.5),
    ScannerShift("moderate", offset=-80.0, scale=0.9, noise=30.0, blur_mm=1.0),
    ScannerShift("severe", offset=150.0, scale=1.15, noise=50.0, blur_mm=1.5),
)


# ----------------------------------------------------------------------------------------------
# the realistic families: a common base


def _check_label(ct: Volume, label: Volume | None) -> None:
    if label is not None and not same_geometry(ct, label):
        raise GlobalmaskError(
            f"label map grid {label.shape} differs from the CT grid {ct.shape}: a variation needs both on one grid"
        )


@dataclass(frozen=True)
class Variation:
    """One level of one family. Subclasses set ``family`` and implement :meth:`_vary`.

    Attributes
    ----------
    level : str
        The level's name within its family (``80kVp``, ``half``, ...).
    """

    level: str

    family: ClassVar[str] = ""
    #: True where the patient moves, so the label map must move with the CT.
    moves_labels: ClassVar[bool] = False
    #: True where the variation is defined by labelled structures (:class:`IodineContrast`).
    needs_label: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """Unique over the suite, e.g. ``voltage-80kVp``: the ``shift`` column of study records.

        Returns
        -------
        str
            ``<family>-<level>``.
        """
        return f"{self.family}-{self.level}"

    def to_dict(self) -> dict[str, Any]:
        """Family, name and every field (tuples as lists): what :func:`variation_from_dict` reads back.

        Returns
        -------
        dict
            JSON-ready description of the variation.
        """
        out: dict[str, Any] = {"family": self.family, "name": self.name}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def apply(self, ct: Volume, seed: int = 0, case_id: str = "") -> Volume:
        """Varied copy of ``ct`` (float32 HU, same shape and affine); the input is never modified.

        Parameters
        ----------
        ct : Volume
            The CT (HU).
        seed : int, optional
            The study seed; with the variation's name and ``case_id`` it seeds the random draws.
        case_id : str, optional
            The case the CT belongs to (every model is tested on the same varied scan of it).

        Returns
        -------
        Volume
            The varied CT.

        Raises
        ------
        GlobalmaskError
            For a variation defined on labelled structures (use :meth:`apply_pair`).
        """
        if self.needs_label:
            raise GlobalmaskError(
                f"variation {self.name!r} is defined on labelled structures: use apply_pair(ct, label, ...)"
            )
        return self.apply_pair(ct, None, seed, case_id)[0]

    def apply_pair(
        self, ct: Volume, label: Volume | None, seed: int = 0, case_id: str = ""
    ) -> tuple[Volume, Volume | None]:
        """Varied CT and label map.

        The label is moved by nearest neighbour where the patient moves (:attr:`moves_labels`),
        otherwise returned as it is.

        Parameters
        ----------
        ct : Volume
            The CT (HU).
        label : Volume or None
            The label map on the CT's grid, or None.
        seed : int, optional
            The study seed; with the variation's name and ``case_id`` it seeds the random draws.
        case_id : str, optional
            The case the CT belongs to (every model is tested on the same varied scan of it).

        Returns
        -------
        ct : Volume
            The varied CT (float32 HU, same grid).
        label : Volume or None
            The label map, moved with the patient where the variation moves it; None when ``label`` is.
        """
        _check_label(ct, label)
        if self.needs_label and label is None:
            raise GlobalmaskError(f"variation {self.name!r} needs the label map")
        arr = np.array(ct.array, dtype=np.float32, copy=True)
        lab = None if label is None else np.asarray(label.array)
        out, moved = self._vary(arr, ct.affine, lab, _rng(seed, self.name, case_id))
        if out.shape != ct.shape:  # geometry is sacred: a variation must never change the grid
            raise AssertionError(f"{self.name} changed the grid {ct.shape} -> {out.shape}")
        varied = Volume(np.asarray(out, dtype=np.float32), ct.affine.copy(), None)
        if label is None:
            return varied, None
        if moved is None:
            return varied, label
        return varied, Volume(moved, label.affine.copy(), None)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(varied CT array, moved label array or None); ``arr`` is a private float32 copy."""
        raise NotImplementedError


def _positive(name: str, **values: float) -> None:
    for key, v in values.items():
        if not (math.isfinite(v) and v > 0):
            raise GlobalmaskError(f"variation {name!r}: {key} must be a finite number > 0, got {v!r}")


# ----------------------------------------------------------------------------------------------
# in-plane frequency tools: kernels and noise texture act on axial slices, in cycles per mm


def _axes(affine: np.ndarray) -> tuple[int, int, int]:
    """(in-plane axis a, in-plane axis b, superior axis) of the array."""
    sup = superior_axis(affine)
    a, b = (i for i in range(3) if i != sup)
    return a, b, sup


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    s = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return float(s[0]), float(s[1]), float(s[2])


def _radial_frequency(shape: tuple[int, ...], spacing: tuple[float, float, float], a: int, b: int) -> np.ndarray:
    """|f| in cycles/mm on the grid of ``rfftn(..., axes=(a, b))``, broadcastable to its output."""
    fa = np.fft.fftfreq(shape[a], d=spacing[a])
    fb = np.fft.rfftfreq(shape[b], d=spacing[b])
    sa = [1, 1, 1]
    sa[a] = fa.size
    sb = [1, 1, 1]
    sb[b] = fb.size
    return np.asarray(np.sqrt(fa.reshape(sa) ** 2 + fb.reshape(sb) ** 2))


def inplane_filter(
    arr: np.ndarray, affine: np.ndarray, transfer: Callable[[np.ndarray], np.ndarray], pad: int = 8
) -> np.ndarray:
    """Filter every axial slice with a radial transfer function H(|f|) (f in cycles/mm).

    Slices are padded by reflection before the FFT so the filter does not wrap one edge of the
    field of view onto the other.

    Parameters
    ----------
    arr : numpy.ndarray
        3-D CT array (HU).
    affine : numpy.ndarray
        4x4 voxel-to-RAS affine (mm): which axes are axial, and the in-plane spacing.
    transfer : callable
        H(|f|), applied to an array of radial frequencies in cycles/mm.
    pad : int, optional
        Reflection padding (voxels) on each in-plane side.

    Returns
    -------
    numpy.ndarray
        The filtered array (float32, same shape).
    """
    a, b, _ = _axes(affine)
    spacing = _spacing(affine)
    widths = [(0, 0)] * 3
    widths[a] = widths[b] = (pad, pad)
    padded = np.pad(arr, widths, mode="reflect")
    f = _radial_frequency(padded.shape, spacing, a, b)
    out = np.fft.irfftn(
        np.fft.rfftn(padded, axes=(a, b)) * transfer(f), s=(padded.shape[a], padded.shape[b]), axes=(a, b)
    )
    keep = [slice(None)] * 3
    keep[a] = slice(pad, pad + arr.shape[a])
    keep[b] = slice(pad, pad + arr.shape[b])
    return np.asarray(out[tuple(keep)], dtype=np.float32)


#: Voxel (mm) at which noise levels are stated: a 512 x 512 reconstruction of a 50 cm field, 2.5 mm slices.
REFERENCE_VOXEL_MM = (1.0, 1.0, 2.5)


def noise_on_grid(std_reference: float, affine: np.ndarray) -> float:
    """Noise std (HU) on this grid for ``std_reference`` HU at :data:`REFERENCE_VOXEL_MM`.

    Quantum noise averages out over larger voxels: std goes as 1/sqrt(voxel volume) (exact for
    uncorrelated noise; FBP noise, weighted to high frequencies, falls somewhat faster, so this
    errs on the noisy side for coarse grids). A scan resampled to 5 mm voxels is nearly noiseless
    at any dose, and that is what it would be after a real low-dose scan too.

    Parameters
    ----------
    std_reference : float
        Noise standard deviation (HU) at :data:`REFERENCE_VOXEL_MM`.
    affine : numpy.ndarray
        4x4 voxel-to-RAS affine (mm) of the grid.

    Returns
    -------
    float
        Noise standard deviation (HU) on the grid.
    """
    ref = float(np.prod(REFERENCE_VOXEL_MM))
    return float(std_reference * math.sqrt(ref / float(np.prod(_spacing(affine)))))


def ct_noise(
    shape: tuple[int, ...], affine: np.ndarray, rng: np.random.Generator, std: float, nps_peak_per_mm: float
) -> np.ndarray:
    """Zero-mean noise with CT texture and standard deviation exactly ``std`` (HU).

    Filtered back-projection shapes quantum noise by the ramp filter times the kernel's
    apodisation: the noise power spectrum of an axial slice rises linearly from zero at low
    frequency and falls off where the kernel rolls off (Hanson, Med Phys 1979;6:441; Kijewski &
    Judy, Phys Med Biol 1987;32:565). Modelled as NPS(f) = f exp(-f^2 / (2 p^2)), peaking at
    ``nps_peak_per_mm`` = p (about 0.2-0.3 /mm for standard body kernels, 0.4-0.6 /mm for sharp
    ones: Solomon, Christianson & Samei, Med Phys 2012;39:6048). Slices are independent; on a
    grid coarser than 1 / (2 p) the spectrum is the rising (ramp) part, as it is for an image
    resampled from the scanner's grid.

    Parameters
    ----------
    shape : tuple of int
        Shape of the CT array.
    affine : numpy.ndarray
        4x4 voxel-to-RAS affine (mm) of the grid.
    rng : numpy.random.Generator
        Source of the white noise.
    std : float
        Standard deviation (HU) of the result.
    nps_peak_per_mm : float
        Frequency (cycles/mm) at which the noise power spectrum peaks.

    Returns
    -------
    numpy.ndarray
        The noise (float32, ``shape``).
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    p = float(nps_peak_per_mm)
    noise = inplane_filter(white, affine, lambda f: np.sqrt(f * np.exp(-(f**2) / (2 * p * p))), pad=0)
    sd = float(noise.std())
    return noise * np.float32(std / sd) if sd > 0 else noise


# ----------------------------------------------------------------------------------------------
# families


@dataclass(frozen=True)
class TubeVoltage(Variation):
    """A tube voltage other than the 120 kVp reference: bone and iodine change, soft tissue does not.

    A scanner is calibrated so that water is 0 HU and air -1000 HU at every kVp, and soft tissue
    and fat stay within a few HU of their 120 kVp values. What changes is the excess attenuation of
    high-Z material over water: iodine (K-edge 33 keV) gains ~60-70% at 80 kVp, ~25-30% at 100 kVp
    and loses ~10-15% at 140 kVp (Yu et al., RadioGraphics 2011;31:835, tube potential and iodine
    CT number; Nakayama et al., Radiology 2005;237:945); calcium (cortical bone) gains less,
    ~25-35% at 80 kVp (the ratio of NIST XCOM attenuation of ICRU cortical bone to water at the
    beams' effective energies, ~50 vs ~65 keV; McCollough et al., Radiology 2015;276:637).

    Model: voxels at or below ``soft_max_hu`` (100 HU: air, fat, water, soft tissue, unenhanced
    blood) are unchanged; above it ``HU' = T + (HU - T) r(HU)`` with T = ``soft_max_hu`` and the
    ratio r going linearly from ``iodine_ratio`` (at T + 300 HU and below: contrast, trabecular
    bone) to ``bone_ratio`` (at T + 1000 HU and above: cortical bone). Continuous at T and
    monotone, so the order of voxels is kept.
    """

    iodine_ratio: float = 1.0
    bone_ratio: float = 1.0
    soft_max_hu: float = 100.0

    family: ClassVar[str] = "voltage"

    def __post_init__(self) -> None:
        _positive(self.name, iodine_ratio=self.iodine_ratio, bone_ratio=self.bone_ratio)

    def ratio(self, hu: np.ndarray) -> np.ndarray:
        """The factor r(HU) applied to the excess over ``soft_max_hu``.

        The iodine ratio up to T + 300 HU, the bone ratio from T + 1000 HU, linear in between.

        Parameters
        ----------
        hu : numpy.ndarray
            CT values (HU).

        Returns
        -------
        numpy.ndarray
            r for each value (float32).
        """
        t = np.clip((np.asarray(hu, dtype=np.float32) - self.soft_max_hu - 300.0) / 700.0, 0.0, 1.0)
        return np.asarray(self.iodine_ratio + (self.bone_ratio - self.iodine_ratio) * t, dtype=np.float32)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        hi = arr > self.soft_max_hu
        v = arr[hi]
        arr[hi] = self.soft_max_hu + (v - self.soft_max_hu) * self.ratio(v)
        return arr, None


@dataclass(frozen=True)
class Dose(Variation):
    """A lower dose: quantum noise grows as dose^-1/2, with the texture of filtered back-projection.

    Noise standard deviation goes as the inverse square root of the dose (mAs) at fixed kVp and
    kernel (McCollough et al., Radiology 2012;264:567); reduced-dose scans are simulated by adding
    noise to full-dose data, as in the AAPM Low Dose CT Grand Challenge (quarter dose; McCollough
    et al., Med Phys 2017;44:e339). At a fraction d of the reference dose the added noise has
    ``sigma0 * sqrt(1/d - 1)`` HU, where sigma0 (``reference_noise_hu``, 12 HU) is soft-tissue noise
    of a routine adult head-and-neck or chest protocol at 2-3 mm (10-15 HU; AAPM TG-233, Samei et
    al., Med Phys 2019;46:e735), both at :data:`REFERENCE_VOXEL_MM`; on the scan's own grid the
    std is :func:`noise_on_grid` of it. Texture: :func:`ct_noise` with a standard kernel's NPS peak.
    """

    dose_fraction: float = 1.0
    reference_noise_hu: float = 12.0
    nps_peak_per_mm: float = 0.25

    family: ClassVar[str] = "dose"

    def __post_init__(self) -> None:
        _positive(
            self.name,
            dose_fraction=self.dose_fraction,
            reference_noise_hu=self.reference_noise_hu,
            nps_peak_per_mm=self.nps_peak_per_mm,
        )
        if self.dose_fraction > 1:
            raise GlobalmaskError(
                f"variation {self.name!r}: dose_fraction must be <= 1 (noise can be added, not removed), "
                f"got {self.dose_fraction}"
            )

    @property
    def noise_hu(self) -> float:
        """Standard deviation of the added noise (HU) at :data:`REFERENCE_VOXEL_MM`.

        Returns
        -------
        float
            ``reference_noise_hu * sqrt(1 / dose_fraction - 1)``.
        """
        return self.reference_noise_hu * math.sqrt(1.0 / self.dose_fraction - 1.0)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.noise_hu > 0:
            arr += ct_noise(arr.shape, affine, rng, noise_on_grid(self.noise_hu, affine), self.nps_peak_per_mm)
        return arr, None


#: MTF50 of a standard soft-tissue kernel (cycles/mm), the assumed kernel of the input scans.
REFERENCE_MTF50 = 0.35


def _gauss_sigma_mm(mtf50_per_mm: float) -> float:
    """Sigma (mm) of the Gaussian point spread whose MTF is 0.5 at ``mtf50_per_mm``."""
    return math.sqrt(math.log(2.0) / (2.0 * math.pi**2)) / mtf50_per_mm


@dataclass(frozen=True)
class Kernel(Variation):
    """Another reconstruction kernel: different sharpness (MTF) and noise.

    Kernel MTF50 runs from ~0.25 /mm (smooth soft-tissue kernels) through ~0.35 /mm (standard) to
    0.6-0.7 /mm (bone/sharp kernels), and sharp kernels have 2-3x the noise of standard ones with
    a higher-frequency texture (Samei et al., AAPM TG-233, Med Phys 2019;46:e735; Solomon et al.,
    Med Phys 2012;39:6048). Model: the slices are filtered in-plane by MTF_target / MTF_reference
    (Gaussian MTFs, reference MTF50 :data:`REFERENCE_MTF50`; the boost of a sharper kernel capped
    at 4x), and a sharp kernel adds ``added_noise_hu`` of noise (at :data:`REFERENCE_VOXEL_MM`,
    scaled by :func:`noise_on_grid`) with its own NPS peak.
    """

    mtf50_per_mm: float = REFERENCE_MTF50
    added_noise_hu: float = 0.0
    nps_peak_per_mm: float = 0.5

    family: ClassVar[str] = "kernel"
    MAX_BOOST: ClassVar[float] = 4.0

    def __post_init__(self) -> None:
        _positive(self.name, mtf50_per_mm=self.mtf50_per_mm, nps_peak_per_mm=self.nps_peak_per_mm)
        if not (math.isfinite(self.added_noise_hu) and self.added_noise_hu >= 0):
            raise GlobalmaskError(f"variation {self.name!r}: added_noise_hu must be >= 0, got {self.added_noise_hu}")

    def transfer(self, f: np.ndarray) -> np.ndarray:
        """MTF_target(f) / MTF_reference(f), f in cycles/mm.

        Parameters
        ----------
        f : numpy.ndarray
            Radial frequencies (cycles/mm).

        Returns
        -------
        numpy.ndarray
            The transfer function, capped at :attr:`MAX_BOOST`.
        """
        d2 = _gauss_sigma_mm(REFERENCE_MTF50) ** 2 - _gauss_sigma_mm(self.mtf50_per_mm) ** 2
        return np.minimum(np.exp(2.0 * math.pi**2 * d2 * f**2), self.MAX_BOOST)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        out = inplane_filter(arr, affine, self.transfer)
        if self.added_noise_hu > 0:
            out += ct_noise(arr.shape, affine, rng, noise_on_grid(self.added_noise_hu, affine), self.nps_peak_per_mm)
        return out, None


def _interp_axis(a: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``pos`` along ``axis`` (clamped)."""
    pos = np.clip(pos, 0.0, a.shape[axis] - 1.0)
    i0 = np.minimum(np.floor(pos).astype(int), a.shape[axis] - 2) if a.shape[axis] > 1 else np.zeros(pos.shape, int)
    t = (pos - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = t.size
    t = t.reshape(shape)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, np.minimum(i0 + 1, a.shape[axis] - 1), axis=axis)
    return np.asarray(lo * (1 - t) + hi * t, dtype=np.float32)


@dataclass(frozen=True)
class SliceThickness(Variation):
    """Thick-slice acquisition, resampled back to the scan's own grid.

    Planning CTs are reconstructed at 2-3 mm (AAPM TG-66, Mutic et al., Med Phys 2003;30:2762),
    diagnostic and archived neck and chest CT often at 5 mm, older or non-helical scans at up to
    10 mm. Model: each thick slice averages the scan over ``thickness_mm`` along the
    superior-inferior axis (a rectangular slice sensitivity profile, voxels as piecewise-constant
    cells), thick slices are contiguous (spacing = thickness), and each original slice is then
    linearly interpolated between thick-slice centres, as a viewer or resampler would.
    In-plane voxels are untouched.
    """

    thickness_mm: float = 5.0

    family: ClassVar[str] = "thickness"

    def __post_init__(self) -> None:
        _positive(self.name, thickness_mm=self.thickness_mm)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        _, _, ax = _axes(affine)
        n = arr.shape[ax]
        w = self.thickness_mm / _spacing(affine)[ax]  # thick slice in voxels
        if n < 2 or w <= 1.0 + 1e-9:
            return arr, None  # thinner than the grid: the scan already is that thick
        # integral of the piecewise-constant signal from the first cell edge (-0.5) to cell edge j - 0.5
        shape = list(arr.shape)
        shape[ax] = 1
        cum = np.concatenate([np.zeros(shape, np.float64), np.cumsum(arr, axis=ax, dtype=np.float64)], axis=ax)
        k = int(math.ceil(n / w))
        centres = -0.5 + w / 2.0 + w * np.arange(k)
        lo = np.clip(centres - w / 2.0, -0.5, n - 0.5)
        hi = np.clip(centres + w / 2.0, -0.5, n - 0.5)
        length = (hi - lo).reshape([k if i == ax else 1 for i in range(3)])
        thick = (_interp_axis(cum, hi + 0.5, ax) - _interp_axis(cum, lo + 0.5, ax)) / length.astype(np.float32)
        # back to the original slice positions: linear between thick-slice centres
        pos = np.interp(np.arange(n, dtype=np.float64), centres, np.arange(k, dtype=np.float64))
        return _interp_axis(thick, pos, ax), None


def find_teeth(arr: np.ndarray, affine: np.ndarray, n_top: int = 60, radius_mm: float = 25.0) -> np.ndarray:
    """World position (mm) of the teeth: the densest cluster of the anterior half of the body.

    Enamel (2500-3000 HU) and existing restorations are the densest material of a head-and-neck
    CT, so the ``n_top`` densest voxels anterior of the body's centroid (RAS +y) are taken and the
    centre of the largest group within ``radius_mm`` of one of them is returned (on the 20
    OpenKBP validation and test cases it lies within one voxel of the mandible's bounding box in
    19, and 2 cm behind it in openkbp_021; without the anterior restriction 3 of 20 land on the
    spine or a shoulder). On a thorax the
    densest anterior bone (sternum, ribs) takes the teeth's place.

    Parameters
    ----------
    arr : numpy.ndarray
        3-D CT array (HU).
    affine : numpy.ndarray
        4x4 voxel-to-RAS affine (mm).
    n_top : int, optional
        How many of the densest anterior voxels are clustered.
    radius_mm : float, optional
        Cluster radius (mm).

    Returns
    -------
    numpy.ndarray
        (3,) RAS position (mm).
    """
    aff = np.asarray(affine)
    body = arr > -500
    idx = np.indices(arr.shape).reshape(3, -1)
    y = aff[1, :3] @ idx + aff[1, 3]
    cand = np.flatnonzero(body.ravel() & (y >= (y[body.ravel()].mean() if body.any() else -np.inf)))
    if cand.size == 0:
        cand = np.arange(arr.size)
    top = cand[np.argsort(arr.ravel()[cand])[-n_top:]]
    world = (aff[:3, :3] @ idx[:, top] + aff[:3, 3:4]).T
    near = np.linalg.norm(world[:, None] - world[None], axis=2) < radius_mm
    best = int(np.argmax(near.sum(axis=1)))
    return np.asarray(world[near[best]].mean(axis=0))


@dataclass(frozen=True)
class Metal(Variation):
    """Dental fillings: dense inserts at the teeth with the streaks they cause after FBP.

    Amalgam (~50% Hg, 35% Ag, 15% Sn, 11.6 g/cm^3) attenuates ~150x water at CT energies; rays
    through it are hardened and photon-starved, and filtered back-projection spreads the
    inconsistency into dark and bright streaks of several hundred to over 1000 HU across the
    slices of the dentition (Barrett & Keat, RadioGraphics 2004;24:1679). Simulated per axial
    slice as in metal-artifact-reduction training data (Zhang & Yu, IEEE TMI 2018;37:1370), with
    scikit-image's ``radon``/``iradon``:

    1. ``n_inserts`` cylinders (radius ``radius_mm``, height ``height_mm`` along the
       superior-inferior axis) at the densest voxels of the dental arch (:func:`find_teeth`), at
       least 8 mm apart, with partial volume on the scan's grid;
    2. their projection p_m; beam hardening as ``p_m / (1 + beam_hardening * p_m)`` (the harder
       the beam behind more metal, the shorter the ray sum falls); photon starvation
       as Poisson counts of ``photons`` incident quanta per ray through patient and metal (at
       least one detected, so the measured line integral saturates at log(photons)), the error
       kept on the rays through metal;
    3. the FBP (Shepp-Logan filtered ramp) of that projection error is added to the slice inside
       the body (streaks running on into the air are left out); values are clipped to the 12-bit
       scale (-1024..3071 HU), where the inserts themselves saturate.

    The slice is simulated at :attr:`SIM_PIXEL_MM` (a coarser scan is upsampled by repetition,
    cropped to the body) and the artifact area-averaged back onto the scan's grid, as the scan
    itself would have been resampled.

    In-plane pixels are taken as square (their mean size) for the projection.
    """

    n_inserts: int = 2
    radius_mm: float = 2.0
    height_mm: float = 4.0
    mu_per_mm: float = 2.9  # amalgam near 70 keV (NIST XCOM mass attenuation x 11.6 g/cm^3)
    beam_hardening: float = 0.02
    photons: float = 2e5

    family: ClassVar[str] = "metal"
    #: Pixel size (mm) the streaks are simulated at, and the reconstruction filter (a standard
    #: kernel: the ramp with Shepp-Logan apodisation).
    SIM_PIXEL_MM: ClassVar[float] = 1.0
    FILTER: ClassVar[str] = "shepp-logan"

    def __post_init__(self) -> None:
        _positive(
            self.name,
            n_inserts=self.n_inserts,
            radius_mm=self.radius_mm,
            height_mm=self.height_mm,
            mu_per_mm=self.mu_per_mm,
            photons=self.photons,
        )
        if not (math.isfinite(self.beam_hardening) and self.beam_hardening >= 0):
            raise GlobalmaskError(f"variation {self.name!r}: beam_hardening must be >= 0, got {self.beam_hardening}")

    def insert_centres(self, arr: np.ndarray, affine: np.ndarray) -> tuple[list[tuple[float, float]], list[int]]:
        """In-plane voxel centres of the inserts and the slice indices they cross.

        Parameters
        ----------
        arr : numpy.ndarray
            3-D CT array (HU).
        affine : numpy.ndarray
            4x4 voxel-to-RAS affine (mm).

        Returns
        -------
        centres : list of tuple of float
            (a, b) voxel indices of each insert's centre, in the two in-plane axes.
        slices : list of int
            Indices along the superior axis of the slices the inserts cross.
        """
        a, b, ax = _axes(affine)
        sp = _spacing(affine)
        teeth = np.linalg.solve(np.asarray(affine)[:3, :3], find_teeth(arr, affine) - np.asarray(affine)[:3, 3])
        k0 = int(np.clip(round(teeth[ax]), 0, arr.shape[ax] - 1))
        half = self.height_mm / 2.0 / sp[ax]
        slices = [k for k in range(arr.shape[ax]) if abs(k - k0) <= max(half, 0.5) - 1e-9 or k == k0]
        plane = np.take(arr, k0, axis=ax)  # (a, b) since a < b
        ia, ib = np.indices(plane.shape)
        dist = np.hypot((ia - teeth[a]) * sp[a], (ib - teeth[b]) * sp[b])
        order = np.argsort(np.where(dist < 30.0, plane, -np.inf).ravel())[::-1]
        centres: list[tuple[float, float]] = []
        for flat in order:
            i, j = np.unravel_index(int(flat), plane.shape)
            if all(math.hypot((i - ci) * sp[a], (j - cj) * sp[b]) >= 8.0 for ci, cj in centres):
                centres.append((float(i), float(j)))
            if len(centres) == self.n_inserts:
                break
        return centres, slices

    def _metal_image(
        self, shape: tuple[int, int], centres: list[tuple[float, float]], sa: float, sb: float
    ) -> np.ndarray:
        """Fraction of each pixel covered by the inserts (5 x 5 supersampling)."""
        ia, ib = np.indices(shape, dtype=np.float64)
        cover = np.zeros(shape, np.float64)
        offsets = (np.arange(5) + 0.5) / 5 - 0.5
        for ci, cj in centres:
            for da in offsets:
                for db in offsets:
                    cover += np.hypot((ia + da - ci) * sa, (ib + db - cj) * sb) < self.radius_mm
        return np.minimum(cover / 25.0, 1.0)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        a, b, ax = _axes(affine)
        sp = _spacing(affine)
        centres, slices = self.insert_centres(arr, affine)
        if not centres:
            return arr, None
        # simulate on a grid of at most SIM_PIXEL_MM, cropped to the body: streaks are finer than a
        # coarse grid, which then receives their area average (what resampling a scan does)
        u = max(1, math.ceil(max(sp[a], sp[b]) / self.SIM_PIXEL_MM - 1e-6))
        fa, fb = sp[a] / u, sp[b] / u
        pix = (fa + fb) / 2.0
        body = np.any(np.take(arr, slices, axis=ax) > -500, axis=ax)
        rows, cols = np.nonzero(body)
        pts_a = [*rows.tolist(), *(int(c[0]) for c in centres)]
        pts_b = [*cols.tolist(), *(int(c[1]) for c in centres)]
        i0, i1 = max(min(pts_a) - 3, 0), min(max(pts_a) + 4, arr.shape[a])
        j0, j1 = max(min(pts_b) - 3, 0), min(max(pts_b) + 4, arr.shape[b])
        h, w = (i1 - i0) * u, (j1 - j0) * u
        side = max(h, w)
        fine_centres = [((ci - i0 + 0.5) * u - 0.5, (cj - j0 + 0.5) * u - 0.5) for ci, cj in centres]
        metal = np.zeros((side, side))
        metal[:h, :w] = self._metal_image((h, w), fine_centres, fa, fb) * self.mu_per_mm * pix  # per pixel length
        theta = np.linspace(0.0, 180.0, max(180, math.ceil(math.pi / 2 * side)), endpoint=False)
        p_m = radon(metal, theta, circle=False)
        for k in slices:
            sl: list[slice | int] = [slice(None)] * 3
            sl[ax] = k
            sl[a] = slice(i0, i1)
            sl[b] = slice(j0, j1)
            coarse = arr[tuple(sl)]  # (a, b): a < b
            plane = np.repeat(np.repeat(coarse, u, axis=0), u, axis=1).astype(np.float64)
            mu = np.zeros((side, side))
            mu[:h, :w] = np.clip(MU_WATER_PER_MM * (1.0 + plane / 1000.0), 0.0, None) * pix
            p_c = radon(mu, theta, circle=False)
            # beam hardening: the ray sums through metal fall short of the truth
            total = p_c + p_m / (1.0 + self.beam_hardening * p_m)
            # photon starvation: Poisson counts, at least one detected quantum per ray (the log
            # saturates at log(photons)); only rays through metal carry the error
            counts = rng.poisson(self.photons * np.exp(-np.maximum(total, 0.0)))
            measured = -np.log(np.maximum(counts, 1) / self.photons)
            err = np.where(p_m > 0, measured - (p_c + p_m), 0.0)
            recon = iradon(p_m + err, theta, output_size=side, filter_name=self.FILTER, circle=False)[:h, :w]
            fine = np.clip(plane + recon / pix / MU_WATER_PER_MM * 1000.0, AIR_HU, MAX_HU)
            delta = (fine - plane).reshape(h // u, u, w // u, u).mean(axis=(1, 3))
            inside = ndimage.binary_dilation(coarse > -500)  # streaks running on into the air are left out
            arr[tuple(sl)] = np.where(inside, np.clip(coarse + delta, AIR_HU, MAX_HU), coarse)
        return arr, None


def _body_centre(arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World centroid (mm) of the voxels above -500 HU; the grid centre if there are none."""
    body = np.argwhere(arr > -500)
    centre = body.mean(axis=0) if body.size else (np.asarray(arr.shape, float) - 1) / 2
    return np.asarray(affine)[:3, :3] @ centre + np.asarray(affine)[:3, 3]


@dataclass(frozen=True)
class TruncatedFOV(Variation):
    """A scan field of view smaller than the patient, off the patient's centre.

    Head and paediatric scan fields of view are 25-32 cm, against 50 cm for body protocols, and
    patients lie on average 2-3 cm off the isocentre, mostly below it (Toth, Ge & Daly, Med Phys
    2007;34:3093). Model: a cylinder of ``diameter_mm`` along the world z axis (the scanner's),
    centred ``offset_mm`` anterior of the body's centroid (the patient lies low in the gantry);
    everything outside becomes :data:`AIR_HU`. The bright rim that extrapolation-free FBP adds
    near the edge of truncated projections (Hsieh et al., Med Phys 2004;31:2385) is not modelled.
    """

    diameter_mm: float = 250.0
    offset_mm: float = 20.0

    family: ClassVar[str] = "fov"

    def __post_init__(self) -> None:
        _positive(self.name, diameter_mm=self.diameter_mm)

    def inside(self, arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """The voxels inside the field-of-view cylinder.

        Parameters
        ----------
        arr : numpy.ndarray
            3-D CT array (HU).
        affine : numpy.ndarray
            4x4 voxel-to-RAS affine (mm).

        Returns
        -------
        numpy.ndarray
            Boolean array of ``arr``'s shape.
        """
        c = _body_centre(arr, affine) + np.array([0.0, self.offset_mm, 0.0])
        aff = np.asarray(affine)
        idx = np.indices(arr.shape).reshape(3, -1)
        xy = aff[:2, :3] @ idx + aff[:2, 3:4]
        r = np.hypot(xy[0] - c[0], xy[1] - c[1]).reshape(arr.shape)
        return np.asarray(r <= self.diameter_mm / 2.0)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        arr[~self.inside(arr, affine)] = AIR_HU
        return arr, None


@dataclass(frozen=True)
class Pose(Variation):
    """A different patient position: rotation about the body's centroid, then translation.

    With a thermoplastic mask, head-and-neck setup varies by ~2-3 mm and 1-2 degrees (Hong et al.,
    IJROBP 2005;61:779); between institutions and without a mask (diagnostic scans, other head
    rests) head flexion differs by 10 degrees and more. ``rotation_deg`` is (about world x:
    nodding/pitch, about y: roll, about z: yaw), applied as extrinsic x-y-z rotations about the
    body's centroid; ``translation_mm`` in world RAS. The CT is resampled linearly (new regions
    :data:`AIR_HU`), the label map by nearest neighbour (new regions background 0), so labels keep
    their values and dtype and move exactly as the CT does.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    family: ClassVar[str] = "pose"
    moves_labels: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for key in ("rotation_deg", "translation_mm"):
            v = tuple(float(x) for x in getattr(self, key))
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise GlobalmaskError(
                    f"variation {self.name!r}: {key} must be three finite numbers, got {getattr(self, key)!r}"
                )
            object.__setattr__(self, key, v)

    def voxel_map(self, arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """4x4 map from output voxel to input voxel (pull-back of the world motion).

        Parameters
        ----------
        arr : numpy.ndarray
            3-D CT array (HU): its body centroid is the centre of rotation.
        affine : numpy.ndarray
            4x4 voxel-to-RAS affine (mm).

        Returns
        -------
        numpy.ndarray
            4x4 matrix taking output voxel indices to input voxel indices.
        """
        aff = np.asarray(affine, dtype=np.float64)
        c = _body_centre(arr, affine)
        rot = Rotation.from_euler("xyz", self.rotation_deg, degrees=True).as_matrix()
        world = np.eye(4)  # q -> R (q - c) + c + t
        world[:3, :3] = rot
        world[:3, 3] = c - rot @ c + np.asarray(self.translation_mm)
        return np.asarray(np.linalg.inv(aff) @ np.linalg.inv(world) @ aff)

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        m = self.voxel_map(arr, affine)
        out = ndimage.affine_transform(arr, m[:3, :3], m[:3, 3], order=1, cval=AIR_HU)
        moved = None
        if label is not None:
            moved = ndimage.affine_transform(label, m[:3, :3], m[:3, 3], order=0, cval=0, output=label.dtype)
        return out, moved


@dataclass(frozen=True)
class IodineContrast(Variation):
    """Another contrast phase: the blood pool of labelled structures brighter or darker by ``hu``.

    Blood enhancement depends on the iodine delivery rate, cardiac output and scan timing: ~40 HU
    unenhanced, ~150-200 HU in a portal-venous phase, 250-400 HU and more in CT angiography (Bae,
    Radiology 2010;256:32). Voxels of the structures with label values ``label_values`` whose
    3x3x3 local mean is above ``min_hu`` (the enhanced blood pool; myocardium, fat and vessel walls
    inside the label stay) are shifted by ``hu``. The thorax phantom paints arterial-phase blood (left heart
    250-400 HU, right 150-350 HU), so its levels (:data:`THORAX_CONTRAST`) go both ways.
    """

    hu: float = 0.0
    label_values: tuple[int, ...] = ()
    min_hu: float = 100.0

    family: ClassVar[str] = "contrast"
    needs_label: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_values", tuple(int(v) for v in self.label_values))
        if not self.label_values or not math.isfinite(self.hu):
            raise GlobalmaskError(f"variation {self.name!r}: give a finite hu and at least one label value")

    def _vary(
        self, arr: np.ndarray, affine: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        assert label is not None  # apply_pair refuses a missing label for this family
        # the blood pool decided on a 3-voxel local mean, so noise does not punch holes in it
        pool = np.isin(label, self.label_values) & (ndimage.uniform_filter(arr, 3) > self.min_hu)
        arr[pool] += np.float32(self.hu)
        return arr, None


# ----------------------------------------------------------------------------------------------
# the suite

#: The default realistic suite (every family that needs no labels), 2-3 levels each.
VARIATION_SUITE: tuple[Variation, ...] = (
    TubeVoltage("80kVp", iodine_ratio=1.65, bone_ratio=1.30),
    TubeVoltage("100kVp", iodine_ratio=1.28, bone_ratio=1.13),
    TubeVoltage("140kVp", iodine_ratio=0.87, bone_ratio=0.93),
    Dose("half", dose_fraction=0.5),
    Dose("quarter", dose_fraction=0.25),
    Dose("tenth", dose_fraction=0.1),
    Kernel("smooth", mtf50_per_mm=0.25),
    Kernel("sharp", mtf50_per_mm=0.60, added_noise_hu=25.0, nps_peak_per_mm=0.5),
    SliceThickness("5mm", thickness_mm=5.0),
    SliceThickness("10mm", thickness_mm=10.0),
    Metal("2-fillings", n_inserts=2, radius_mm=2.0, height_mm=4.0),
    Metal("6-fillings", n_inserts=6, radius_mm=2.5, height_mm=6.0),
    TruncatedFOV("320mm", diameter_mm=320.0, offset_mm=20.0),
    TruncatedFOV("250mm", diameter_mm=250.0, offset_mm=20.0),
    Pose("setup", rotation_deg=(2.0, 1.0, 1.0), translation_mm=(3.0, 3.0, 3.0)),
    Pose("unmasked", rotation_deg=(10.0, 4.0, 4.0), translation_mm=(10.0, 10.0, 10.0)),
)

#: Contrast phases for the thorax phantom (labels of ``phantom.thorax.THORAX_LABELS``: heart 1, aorta 4).
THORAX_CONTRAST: tuple[Variation, ...] = (
    IodineContrast("venous", hu=-100.0, label_values=(1, 4)),
    IodineContrast("strong", hu=100.0, label_values=(1, 4)),
    IodineContrast("cta", hu=200.0, label_values=(1, 4)),
)

FAMILIES: dict[str, type[Variation]] = {
    cls.family: cls for cls in (TubeVoltage, Dose, Kernel, SliceThickness, Metal, TruncatedFOV, Pose, IodineContrast)
}

AnyVariation = Variation | ScannerShift


def variation_from_dict(d: dict[str, Any]) -> AnyVariation:
    """Inverse of ``to_dict`` for every family; a dict without ``family`` is a :class:`ScannerShift`.

    Parameters
    ----------
    d : dict
        A variation's ``to_dict``.

    Returns
    -------
    Variation or ScannerShift
        The variation it describes.

    Raises
    ------
    GlobalmaskError
        For an unknown family or parameter, or a name that does not match family and level.
    """
    d = dict(d)
    family = d.pop("family", SCANNER_FAMILY)
    if family == SCANNER_FAMILY:
        try:
            return ScannerShift(**d)
        except TypeError as exc:
            raise GlobalmaskError(f"scanner shift {d!r}: {exc}") from exc
    if family not in FAMILIES:
        raise GlobalmaskError(f"unknown variation family {family!r}; choose one of scanner, {', '.join(FAMILIES)}")
    name = d.pop("name", None)
    cls = FAMILIES[family]
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise GlobalmaskError(
            f"variation family {family!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(known)}"
        )
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        out = cls(**kwargs)
    except TypeError as exc:
        raise GlobalmaskError(f"variation {d!r}: {exc}") from exc
    if name is not None and name != out.name:
        raise GlobalmaskError(f"variation name {name!r} does not match its family and level ({out.name!r})")
    return out
