"""Simulated scanner changes: the intensity shifts a CT-trained model meets in another hospital.

A :class:`ScannerShift` applies ``HU' = scale * HU + offset``, Gaussian noise (HU) and Gaussian
blur (mm) to a CT on its own grid, seeded per case so every model is tested on identical shifted
scans. The GBM is then recomputed from the shifted CT, as it would be in practice.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .io import Volume


@dataclass(frozen=True)
class ScannerShift:
    name: str
    offset: float = 0.0  # HU
    scale: float = 1.0
    noise: float = 0.0  # HU, standard deviation
    blur_mm: float = 0.0  # Gaussian sigma in mm

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, ct: Volume, seed: int = 0, case_id: str = "") -> Volume:
        """Shifted copy of ``ct`` (float32 HU); the input is never modified."""
        arr = np.asarray(ct.array, dtype=np.float32)
        if self.blur_mm > 0:
            sigma = [self.blur_mm / s for s in ct.spacing]
            arr = ndimage.gaussian_filter(arr, sigma)
        arr = arr * np.float32(self.scale) + np.float32(self.offset)
        if self.noise > 0:
            rng = np.random.default_rng([seed, zlib.crc32(f"{self.name}/{case_id}".encode())])
            arr = arr + rng.normal(0.0, self.noise, size=arr.shape).astype(np.float32)
        return Volume(arr, ct.affine.copy(), None)


#: Named levels used by the study unless its configuration gives others.
DEFAULT_SHIFTS = (
    ScannerShift("mild", offset=40.0, scale=1.05, noise=15.0, blur_mm=0.5),
    ScannerShift("moderate", offset=-80.0, scale=0.9, noise=30.0, blur_mm=1.0),
    ScannerShift("severe", offset=150.0, scale=1.15, noise=50.0, blur_mm=1.5),
)
