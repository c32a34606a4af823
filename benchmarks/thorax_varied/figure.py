"""The thorax phantom beside its varied twin: the same subjects, other acquisitions.

For a few cases of one seed, writes ``cases.png``: row 1 the ``thorax`` kind (linear HU "scanner"),
row 2 the ``thorax-varied`` kind of the same case (identical labels; contrast phase, tube voltage,
dose and kernel drawn per case), axial through the heart's centroid, and row 3 the varied case
coronal through the heart. One window for every panel (W 700, L 100: -250..450 HU), so a
difference in grey is a difference in HU. Titles give each varied case's draws (phase, kVp,
kernel, noise on the grid, left-heart blood as the image shows it). Nothing is trained.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/thorax_varied/figure.py \\
        --cases 0 1 2 10 6 --out benchmarks/thorax_varied/cases.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from globalmask.phantom import THORAX_LABELS, make_phantom_case
from globalmask.phantom.thorax import acquisition_stream, draw_acquisition

WINDOW = (-250.0, 450.0)


def heart_centre(label: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the heart label's centroid (the grid centre if there is no heart)."""
    idx = np.argwhere(label == THORAX_LABELS["heart"])
    c = idx.mean(axis=0) if idx.size else (np.asarray(label.shape) - 1) / 2
    return tuple(int(round(v)) for v in c)  # type: ignore[return-value]


def axial(arr: np.ndarray, k: int) -> np.ndarray:
    """Axial slice k for display: anterior up, patient right on the left (RAS+ array)."""
    return arr[::-1, ::-1, k].T


def coronal(arr: np.ndarray, j: int) -> np.ndarray:
    """Coronal slice j for display: superior up, patient right on the left."""
    return arr[::-1, j, ::-1].T


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, nargs="+", default=[0, 1, 2, 10, 6])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 64, 64))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/thorax_varied/cases.png"))
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.cases)
    fig, axes = plt.subplots(3, n, figsize=(3.2 * n, 10.2), squeeze=False)
    for col, i in enumerate(args.cases):
        old, lab = make_phantom_case("thorax", i, args.seed, tuple(args.shape))
        new, lab_v = make_phantom_case("thorax-varied", i, args.seed, tuple(args.shape))
        assert np.array_equal(lab.array, lab_v.array), "labels differ between the variants"
        acq = draw_acquisition(acquisition_stream(args.seed, i))
        _, cj, ck = heart_centre(lab.array)
        sx, sy, sz = old.spacing
        d = acq.to_dict()
        panels = [
            (axial(old.array, ck), sy / sx, f"thorax {i:03d} (linear scanner)"),
            (axial(new.array, ck), sy / sx,
             f"varied: {acq.phase}, {acq.kvp} kVp\n{acq.kernel} kernel, noise {acq.noise_hu():.0f} HU\n"
             f"LV blood {d['blood_lv_image_hu']:.0f} HU"),
            (coronal(new.array, cj), sz / sx, "varied, coronal"),
        ]
        for row, (img, aspect, title) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], aspect=aspect, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"thorax vs thorax-varied, seed {args.seed}, {'x'.join(map(str, args.shape))} "
                 f"(window {WINDOW[0]:.0f}..{WINDOW[1]:.0f} HU; patient right on the left)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
