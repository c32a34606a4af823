"""One figure per variation family: a slice before and after each level, and the difference.

Reads one case in place (never copies data), applies every level of ``shift.VARIATION_SUITE`` on the
scan's own grid, and writes ``benchmarks/variations/<family>.png``: top row the original and each
level (HU window -400..1000; dose and kernel -160..240), bottom row varied minus original
(+-500 HU; dose and kernel +-50 HU). The slice shows what the
family changes: axial through the teeth (voltage, dose, kernel, metal), axial through the widest
slice (field of view), sagittal through the teeth (slice thickness, pose, with the moved label's
outline). Iodine contrast needs labelled blood pools, so it is drawn on a thorax phantom case. Noise
is stated at a 1 x 1 x 2.5 mm voxel and scaled to the scan's grid (``shift.noise_on_grid``), so on
OpenKBP's 5 mm grid the dose and kernel noise is ~1/5 of the stated level.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/variations.py \
        ../shared/data/Dataset501_OpenKBPHeadNeck --case openkbp_013 --out benchmarks/variations
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from globalmask.dataset import load_dataset
from globalmask.io import Volume, read_volume
from globalmask.phantom import make_phantom_case
from globalmask.shift import THORAX_CONTRAST, VARIATION_SUITE, Variation, find_teeth

WINDOW = (-400.0, 1000.0)
DIFF = 500.0
#: Families whose changes are small in HU are shown in a soft-tissue window (W 400, L 40) with a narrower
#: difference scale.
SOFT = {"dose": ((-160.0, 240.0), 50.0), "kernel": ((-160.0, 240.0), 50.0)}


def plane(arr: np.ndarray, affine: np.ndarray, normal: int, index: int) -> tuple[np.ndarray, float]:
    """The slice ``index`` across the array axis closest to world axis ``normal`` (0 x, 1 y, 2 z),
    oriented for display (axial: anterior up, patient right on the left; sagittal: superior up,
    anterior on the left), with its pixel aspect (row spacing / column spacing)."""
    a = np.asarray(affine)[:3, :3]
    axis_of = [int(np.argmax(np.abs(a[w]))) for w in range(3)]
    spacing = np.sqrt((a**2).sum(axis=0))
    img = np.take(arr, index, axis=axis_of[normal])
    rest = [ax for ax in range(3) if ax != axis_of[normal]]
    row_w, col_w, col_up = {2: (1, 0, True), 0: (2, 1, False), 1: (2, 0, True)}[normal]
    row_ax, col_ax = axis_of[row_w], axis_of[col_w]
    if rest.index(row_ax) != 0:
        img = img.T
    if a[row_w, row_ax] > 0:  # rows run from the top (superior / anterior) down
        img = img[::-1]
    if (a[col_w, col_ax] > 0) != col_up:
        img = img[:, ::-1]
    return img, float(spacing[row_ax] / spacing[col_ax])


def voxel_of(world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.rint(np.linalg.solve(np.asarray(affine)[:3, :3], world - np.asarray(affine)[:3, 3])).astype(int)


def figure(
    family: str, levels: list[Variation], ct: Volume, label: Volume | None, view: tuple[int, int], out: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normal, index = view
    window, diff = SOFT.get(family, (WINDOW, DIFF))
    varied = [v.apply_pair(ct, label, seed=0, case_id="figure") for v in levels]
    cols = 1 + len(levels)
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 6.6), squeeze=False)
    base, aspect = plane(np.asarray(ct.array, np.float32), ct.affine, normal, index)
    rows, cols_ = np.nonzero(base > -500)  # show the body and a margin, not the empty field
    margin = 8
    crop = (
        (
            slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
            slice(max(cols_.min() - margin, 0), cols_.max() + margin + 1),
        )
        if rows.size
        else (slice(None), slice(None))
    )
    base = base[crop]
    panels = [("original", ct, label), *[(v.level, vc, vl) for v, (vc, vl) in zip(levels, varied)]]
    for col, (name, vol, lab) in enumerate(panels):
        img = plane(np.asarray(vol.array, np.float32), vol.affine, normal, index)[0][crop]
        ax = axes[0, col]
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
        if lab is not None and family in ("pose", "contrast"):
            values = getattr(levels[0], "label_values", ())
            lab_arr = np.isin(np.asarray(lab.array), values) if values else np.asarray(lab.array)
            limg = plane(lab_arr, lab.affine, normal, index)[0][crop]
            if limg.any():
                ax.contour(limg > 0, levels=[0.5], colors="tab:orange", linewidths=0.8)
        ax.set_title(name, fontsize=10)
        d = axes[1, col]
        d.imshow(img - base, cmap="RdBu_r", vmin=-diff, vmax=diff, aspect=aspect, interpolation="nearest")
        d.set_title(
            "difference" if col else f"(window {window[0]:.0f}..{window[1]:.0f}; diff +-{diff:.0f} HU)", fontsize=9
        )
        for a in (ax, d):
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out / f"{family}.png", dpi=80)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--case", default=None, help="case id (default: the first validation case)")
    p.add_argument("--out", default="benchmarks/variations")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.dataset)
    cid = args.case or sorted(ds.cases)[0]
    ct, label = read_volume(ds.cases[cid].image), read_volume(ds.cases[cid].label)
    arr = np.asarray(ct.array, np.float32)
    teeth = voxel_of(find_teeth(arr, ct.affine), ct.affine)
    axis_of = [int(np.argmax(np.abs(ct.affine[w, :3]))) for w in range(3)]
    axial_teeth = (2, int(teeth[axis_of[2]]))
    sagittal = (0, int(teeth[axis_of[0]]))
    body_area = (arr > -500).sum(axis=tuple(i for i in range(3) if i != axis_of[2]))
    axial_wide = (2, int(np.argmax(body_area)))
    views = {
        "voltage": axial_teeth,
        "dose": axial_teeth,
        "kernel": axial_teeth,
        "metal": axial_teeth,
        "fov": axial_wide,
        "thickness": sagittal,
        "pose": sagittal,
    }
    families: dict[str, list[Variation]] = {}
    for v in VARIATION_SUITE:
        families.setdefault(v.family, []).append(v)
    for family, levels in families.items():
        figure(family, levels, ct, label, views[family], out,
               f"{family} ({cid}, {ct.spacing[0]:.1f} x {ct.spacing[1]:.1f} x {ct.spacing[2]:.1f} mm)")
        print(f"wrote {out / (family + '.png')}")
    # iodine contrast: the thorax phantom, whose labels give the heart and aorta
    tct, tlab = make_phantom_case("thorax", 0, 0, shape=(96, 96, 64))
    heart = np.argwhere(np.asarray(tlab.array) == 1)
    z_axis = int(np.argmax(np.abs(tct.affine[2, :3])))
    k = int(np.median(heart[:, z_axis])) if heart.size else tct.shape[z_axis] // 2
    figure("contrast", list(THORAX_CONTRAST), tct, tlab, (2, k), out,
           "contrast (thorax phantom case 0; heart and aorta outlined)")
    print(f"wrote {out / 'contrast.png'}")


if __name__ == "__main__":
    main()
