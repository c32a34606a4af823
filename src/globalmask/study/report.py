"""Figures and ``report.md`` for a study: tables a researcher can put in front of colleagues.

Everything here reads :class:`~globalmask.study.StudyResults`, computed from run records only
(plus, for the overlay figures, the predictions in the run folders when they are at hand); no
number is computed that is not also in ``per_case.csv`` / ``results.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..dataset import load_dataset
from ..io import atomic_path, read_volume, voxel_spacing, write_json, write_text
from ..masks import Recipe, largest_component
from ..metrics import mean_std_text
from ..preprocess import to_canonical
from ..qc import draw_case
from .config import StudyConfig
from .stats import (
    ELIGIBLE_MARGIN,
    REFERENCE_MODE,
    TARGET_MODES,
    TIE_MARGIN,
    RunSummary,
    StudyResults,
    family_verdicts,
    robust_choice,
    robust_recipe_table,
    shift_families,
)

#: The paper's numbers (Kazemimoghadam et al. 2022, arXiv:2205.09107), for side-by-side tables.
PAPER: dict[str, dict[str, Any]] = {
    "brain": {
        "gbm_dice": (0.77, 0.06),
        "gbm_com_mm": (3.12, 1.43),
        "improvement_pct": (4.3, 125.3),
        "split": "26:10:10",
    },
    "heart": {"gbm_dice": (0.85, 0.04), "gbm_com_mm": (2.5, 0.93), "improvement_pct": (1.3, 48.1), "split": "12:3:5"},
}

MODE_COLORS = {"ct": "tab:blue", "gbm": "tab:orange", "ct+gbm": "tab:green", "ct+coords": "tab:purple"}


def _size_value(label: str, n_train: int) -> int:
    return n_train if str(label) == "all" else int(label)


def _rel(c: dict) -> str:
    """Relative Dice improvement; a percentage of a (near-)zero baseline means nothing, so show both."""
    if not c["dice_b"] >= 0.01:
        return f"{c['dice_b']:.3f} -> {c['dice_a']:.3f}"
    return f"{c['relative_improvement_pct']:+.1f}%"


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _finish_categories(fig, ax, labels: Sequence[str], ylabel: str, title: str, path: Path, rotation: float) -> str:
    """Label a plot over named categories (structures, shift levels), save it and free it; its file name."""
    import matplotlib.pyplot as plt

    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation > 30 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    _savefig(fig, path)
    plt.close(fig)
    return path.name


# ----------------------------------------------------------------------------------------------
# figures


def plot_learning_curves(per_case: pd.DataFrame, n_train: int, out: Path, recipe: str) -> list[str]:
    """Dice and CoM error against training-set size: one line per mode, spread across draws.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    n_train : int
        The training split's size (the x position of ``all``).
    out : Path
        The report folder.
    recipe : str
        The sweep's GBM recipe.

    Returns
    -------
    list of str
        File names of the Dice and the CoM figures.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = per_case[
        (per_case["recipe"] == recipe)
        & (per_case["subset"] == "test")
        & (per_case["shift"] == "none")
        & (per_case["status"] != "absent")
    ].copy()
    sel["n"] = [_size_value(s, n_train) for s in sel["size"].astype(str)]
    names = []
    for metric, ylabel, fname in (
        ("dice", "Dice (test, mean over cases and structures)", "dice_vs_n.png"),
        ("com_mm", "centre-of-mass error (mm)", "com_vs_n.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode, g in sel.groupby("mode", sort=False):
            per_draw = g.groupby(["n", "draw"])[metric].mean().reset_index()
            stats = per_draw.groupby("n")[metric].agg(["mean", "min", "max"]).reset_index()
            color = MODE_COLORS.get(mode)
            ax.plot(stats["n"], stats["mean"], "o-", label=mode, color=color)
            ax.fill_between(stats["n"], stats["min"], stats["max"], alpha=0.2, color=color)
        ax.set_xscale("log", base=2)
        ticks = sorted(sel["n"].unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("training cases")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(title="input (band: range over draws)")
        _savefig(fig, out / fname)
        plt.close(fig)
        names.append(fname)
    return names


def plot_boxplots(per_case: pd.DataFrame, out: Path, recipe: str, size: str = "all") -> str:
    """Per-structure Dice on the test split at one training size, one box per mode.

    Parameters
    ----------
    per_case : pandas.DataFrame
        The study's per-case table.
    out : Path
        The report folder.
    recipe : str
        The sweep's GBM recipe.
    size : str
        The training size.

    Returns
    -------
    str
        The figure's file name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = per_case[
        (per_case["recipe"] == recipe)
        & (per_case["subset"] == "test")
        & (per_case["shift"] == "none")
        & (per_case["size"].astype(str) == size)
        & (per_case["status"] != "absent")
    ]
    structures = list(dict.fromkeys(sel["structure"]))
    modes = list(dict.fromkeys(sel["mode"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(structures)), 4))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        data = [sel[(sel["mode"] == mode) & (sel["structure"] == s)]["dice"].to_numpy() for s in structures]
        pos = np.arange(len(structures)) + (i - (len(modes) - 1) / 2) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True)
        for patch in bp["boxes"]:
            patch.set_facecolor(MODE_COLORS.get(mode, "grey"))
            patch.set_alpha(0.6)
        ax.plot([], [], "s", color=MODE_COLORS.get(mode, "grey"), label=mode)
    ax.set_ylim(0, 1)
    return _finish_categories(
        fig,
        ax,
        structures,
        "Dice (test)",
        f"per-structure Dice, training size {size}",
        out / "boxplot_structures.png",
        rotation=20,
    )


def plot_shift(drops: pd.DataFrame, out: Path) -> str | None:
    """Dice drop per shift and mode at the largest training size scored under the shifts.

    Parameters
    ----------
    drops : pandas.DataFrame
        :func:`~globalmask.study.stats.shift_drops`.
    out : Path
        The report folder.

    Returns
    -------
    str or None
        The figure's file name; None without drops.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if drops.empty:
        return None
    size = "all" if "all" in set(drops["size"]) else drops["size"].iloc[-1]
    sel = drops[drops["size"] == size]
    shifts = list(dict.fromkeys(sel["shift"]))
    modes = list(dict.fromkeys(sel["mode"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        vals = [float(sel[(sel["mode"] == mode) & (sel["shift"] == s)]["dice_drop"].iloc[0]) for s in shifts]
        ax.bar(
            np.arange(len(shifts)) + (i - (len(modes) - 1) / 2) * width,
            vals,
            width,
            label=mode,
            color=MODE_COLORS.get(mode),
        )
    ax.axhline(0, color="black", lw=0.8)
    title = f"robustness to simulated scanner change (training size {size})"
    return _finish_categories(
        fig,
        ax,
        shifts,
        "Dice drop (unshifted - shifted)",
        title,
        out / "shift_drop.png",
        rotation=0 if len(shifts) <= 6 else 60,
    )


def plot_overlays(
    runs_dir: Path, results: StudyResults, n_cases: int, out: Path, dataset_root: str | Path | None = None
) -> list[str]:
    """CT, GBM, reference and each mode's prediction on the same axial slice, for a few test cases,
    and each mode's prediction of those cases as :func:`globalmask.qc.draw_case` draws it.

    Needs the dataset and one full-size draw's predictions, every mode's, in ``runs_dir``: the
    lowest draw that has them all (a study continued on another machine keeps only the run
    folders trained there). Draws nothing (and the report says so) when no draw is complete.

    Parameters
    ----------
    runs_dir : Path
        A study folder's ``runs/``.
    results : StudyResults
        The study's statistics.
    n_cases : int
        How many test cases to draw.
    out : Path
        The report folder.
    dataset_root : str or Path, optional
        Where the study's data lie, when not where the plan says.

    Returns
    -------
    list of str
        File names of the figures drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    root = Path(dataset_root if dataset_root is not None else results.plan.dataset_root)
    if results.sweep_recipe is None or (not (root / "dataset.json").exists() and not (root / "images").is_dir()):
        return []
    recipe = Recipe.parse(results.sweep_recipe)
    cases = list(results.plan.split.test[:n_cases])
    full_size = [r for r in results.runs if r.role == "sweep" and r.recipe == recipe.spec and r.size_label == "all"]
    modes = {r.mode for r in full_size}
    for draw in sorted({r.draw for r in full_size}):
        full = [r for r in full_size if r.draw == draw]
        if {r.mode for r in full} == modes and all(
            (runs_dir / r.name / "predictions" / f"{c}.nii.gz").exists() for r in full for c in cases
        ):
            break
    else:
        return []
    ds = load_dataset(root)
    names = []
    for case_id in cases:
        names += _overlay_case(plt, ds, case_id, recipe, full, draw, runs_dir, out)
    return names


def _overlay_case(plt: Any, ds: Any, case_id: str, recipe: Recipe, full: list[RunSummary], draw: int, runs_dir: Path,
                  out: Path) -> list[str]:
    """One test case of :func:`plot_overlays`: its overlay figure and each mode's QC figure; their file names."""
    case = ds.cases[case_id]
    ct = read_volume(case.image)
    assert case.label is not None  # test cases of a study have labels
    ref = read_volume(case.label)
    canon, caff = to_canonical(np.asarray(ct.array), ct.affine)
    rcanon, _ = to_canonical(np.asarray(ref.array), ref.affine)
    gbm = recipe(canon, caff)
    first = int(min(ds.structures.values()))
    zs = np.nonzero((rcanon == first).any(axis=(0, 1)))[0]
    z = int(zs.mean()) if len(zs) else canon.shape[2] // 2
    panels = [("CT", None), (f"GBM ({recipe.spec})", None), ("reference", None)] + [(r.mode, r) for r in full]
    body = largest_component(canon[:, :, z] > -500)  # zoom on the body, not the couch or air
    corners = (np.array([0, canon.shape[0] - 1]), np.array([0, canon.shape[1] - 1]))
    xs, ys = np.nonzero(body) if body.any() else corners
    pad = 4
    xlim = (min(canon.shape[0] - 0.5, xs.max() + pad), max(-0.5, xs.min() - pad))  # reversed: radiological
    ylim = (max(-0.5, ys.min() - pad), min(canon.shape[1] - 0.5, ys.max() + pad))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    spacing = voxel_spacing(caff)
    extent_ratio = spacing[1] / spacing[0]
    for ax, (title, run) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.clip(canon[:, :, z].T, -400, 600), cmap="gray", origin="lower", aspect=extent_ratio)
        if title.startswith("GBM"):
            ax.imshow(np.ma.masked_equal(gbm[:, :, z].T.astype(float), 0), cmap="autumn", alpha=0.45, origin="lower",
                      aspect=extent_ratio)
        if run is None:
            lab = rcanon
        else:
            pred_path = runs_dir / run.name / "predictions" / f"{case_id}.nii.gz"
            lab = to_canonical(np.asarray(read_volume(pred_path).array), ct.affine)[0]
        if title != "CT" and not title.startswith("GBM"):
            for v in ds.structures.values():
                m = (lab[:, :, z] == v).T
                if m.any():
                    ax.contour(m, levels=[0.5], colors=[plt.cm.tab10(v % 10)], linewidths=1.2, origin="lower")
            if run is not None:
                ax.contour((rcanon[:, :, z] > 0).T, levels=[0.5], colors="white", linewidths=0.6, linestyles="dotted",
                           origin="lower")
        ax.set_xlim(*xlim)  # decreasing x: radiological convention, patient right on the image left
        ax.set_ylim(*ylim)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{case_id}, axial slice {z}, full-size models of draw {draw} (radiological view: image left = "
                 "patient right, anterior up; dotted white = reference)", fontsize=9)
    name = f"overlay_{case_id}.png"
    _savefig(fig, out / name)
    plt.close(fig)
    names = [name]
    for run in full:  # and the case as `evaluate --qc` draws it: three views per structure, per mode
        qc_name = f"qc_{case_id}_{run.mode.replace('+', '_')}.png"
        pred = read_volume(runs_dir / run.name / "predictions" / f"{case_id}.nii.gz")
        draw_case(out / qc_name, ds.labels, ref, pred, ct,
                  title=f"{case_id}: {run.mode}, full-size model of draw {draw} (blue: reference, orange dashed: "
                  "prediction)")
        names.append(qc_name)
    return names


# ----------------------------------------------------------------------------------------------
# report.md


def _row(summary: pd.DataFrame, **keys: Any) -> pd.Series | None:
    if summary.empty:
        return None
    sel = summary
    for k, v in keys.items():
        sel = sel[sel[k].astype(str) == str(v)]
    return None if sel.empty else sel.iloc[0]


def draw_spread_table(
    runs: Sequence[RunSummary], recipe: str, sizes: list[str], modes: list[str], n_train: int
) -> pd.DataFrame:
    """One cell per (size, mode): every draw's mean test Dice and their range.

    The ± of the summaries pools draws, cases and structures; this is the spread between draws of
    training cases alone, which says whether a difference between modes is more than the luck of
    one draw.

    Parameters
    ----------
    runs : sequence of RunSummary
        The study's runs.
    recipe : str
        The sweep's GBM recipe.
    sizes : list of str
        The training sizes (rows).
    modes : list of str
        The modes (columns).
    n_train : int
        The training split's size, to name the full size.

    Returns
    -------
    pandas.DataFrame
        The table as text; empty where no run has a score.
    """
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"training cases": size if size != "all" else f"all ({n_train})"}
        for mode in modes:
            dice = [r.test_dice_mean for r in sorted(runs, key=lambda r: r.draw)
                    if r.role == "sweep" and r.recipe == recipe and r.mode == mode and r.size_label == size]
            if not dice:
                row[mode] = "n/a"
            elif len(dice) == 1:
                row[mode] = f"{dice[0]:.3f}"
            else:
                row[mode] = " / ".join(f"{d:.3f}" for d in dice) + f" (range {max(dice) - min(dice):.3f})"
        rows.append(row)
    return (
        pd.DataFrame(rows)
        if any(v != "n/a" for row in rows for k, v in row.items() if k != "training cases")
        else pd.DataFrame()
    )


def against_target(value: float, target: float, digits: int) -> str:
    """``value`` with enough decimals to tell it from ``target``: a verdict "not reached" beside a
    measured 0.850 for a target of 0.85 reads as a bug when the mean is 0.8497.

    Parameters
    ----------
    value : float
        The measured value.
    target : float
        The value it is compared with.
    digits : int
        The usual number of decimals.

    Returns
    -------
    str
        ``value`` with ``digits`` decimals, or more where those round it to ``target``'s.
    """
    for d in range(digits, digits + 4):
        if round(float(value), d) != round(float(target), d):
            return f"{value:.{d}f}"
    return f"{value:.{digits}f}"


def paper_section(summary: pd.DataFrame, comps: pd.DataFrame, config: Any, main_recipe: str, n_train: int) -> list[str]:
    """The paper's numbers beside ours, point by point, and whether its figures were reached.

    Parameters
    ----------
    summary : pandas.DataFrame
        :func:`~globalmask.study.stats.summary_table`.
    comps : pandas.DataFrame
        The paired comparisons.
    config : StudyConfig
        The study's configuration (its ``reference`` and ``reference_structure``).
    main_recipe : str
        The sweep's GBM recipe.
    n_train : int
        The training split's size.

    Returns
    -------
    list of str
        The section's lines.
    """
    ref = PAPER[config.reference]
    structure = config.reference_structure or "all"
    lines = [f"## 5. The paper ({config.reference} CT, split {ref['split']}) beside this study", ""]
    gbm = _row(summary, recipe=main_recipe, mode="gbm", size="all", subset="test", shift="none", structure=structure)
    gbm_all = _row(summary, recipe=main_recipe, mode="gbm", size="all", subset="test", shift="none", structure="all")
    small = comps
    if not comps.empty:
        small = comps[(comps["a"] == "ct+gbm") & (comps["b"] == "ct") & (comps["structure"] == "all")
                      & (comps["size"].isin(["1", "2", "4", "8"]))]
    rows = [
        {"quantity": f"GBM-only Dice ({structure}, full training set)",
         "paper": mean_std_text(ref["gbm_dice"][0], ref["gbm_dice"][1], 2),
         "ours": "n/a" if gbm is None else mean_std_text(gbm["dice_mean"], gbm["dice_std"])},
        {"quantity": f"GBM-only CoM error, mm ({structure})",
         "paper": mean_std_text(ref["gbm_com_mm"][0], ref["gbm_com_mm"][1], 2),
         "ours": "n/a" if gbm is None else mean_std_text(gbm["com_mm_mean"], gbm["com_mm_std"], 2)},
        {"quantity": "GBM-only Dice, all structures", "paper": "-",
         "ours": "n/a" if gbm_all is None else mean_std_text(gbm_all["dice_mean"], gbm_all["dice_std"])},
        {"quantity": "GBM-only CoM error, mm, all structures", "paper": "-",
         "ours": "n/a" if gbm_all is None else mean_std_text(gbm_all["com_mm_mean"], gbm_all["com_mm_std"], 2)},
    ]
    if not small.empty:
        lo, hi = small["relative_improvement_pct"].min(), small["relative_improvement_pct"].max()
        detail = ", ".join(f"n={c['size']}: {c['relative_improvement_pct']:+.1f}% (p={c['wilcoxon_p']:.2g})"
                           for c in small.to_dict(orient="records"))
        rows.append({"quantity": "CT+GBM over CT, relative Dice improvement, 1-8 training cases",
                     "paper": f"+{ref['improvement_pct'][0]}% to +{ref['improvement_pct'][1]}%",
                     "ours": f"{lo:+.1f}% to {hi:+.1f}% ({detail})"})
    lines += [_md_table(pd.DataFrame(rows)), ""]
    checks = []
    if gbm is not None:
        checks.append((f"GBM-only {structure} Dice >= {ref['gbm_dice'][0]}", gbm["dice_mean"] >= ref["gbm_dice"][0],
                       against_target(gbm["dice_mean"], ref["gbm_dice"][0], 3)))
        checks.append((f"GBM-only {structure} CoM error <= {ref['gbm_com_mm'][0]} mm",
                       gbm["com_mm_mean"] <= ref["gbm_com_mm"][0],
                       f"{against_target(gbm['com_mm_mean'], ref['gbm_com_mm'][0], 2)} mm"))
    for size in ("1", "2"):
        c = small[small["size"] == size] if not small.empty else small
        if not c.empty:
            c = c.iloc[0]
            ok = c["dice_a"] > c["dice_b"] and c["wilcoxon_p"] < 0.05
            checks.append((f"CT+GBM better than CT at {size} training case(s), p < 0.05", ok,
                           f"{c['dice_a']:.3f} vs {c['dice_b']:.3f}, p = {c['wilcoxon_p']:.3g}"))
    if checks:
        lines += ["Targets (the paper's figures):", ""]
        lines += [f"* {'**reached**' if ok else '**not reached**'}: {what} (measured: {value})"
                  for what, ok, value in checks]
        lines += [""]
        if not small.empty:
            lines += [_wilcoxon_floor_note(int(small["n_cases"].min())), ""]
    return lines


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test can give with n pairs: 2 / 2^n.

    Parameters
    ----------
    n : int
        The number of pairs.

    Returns
    -------
    float
        The smallest attainable p.
    """
    return min(1.0, 2.0 / 2**n)


def _wilcoxon_floor_note(n: int) -> str:
    floor = wilcoxon_floor(n)
    if floor >= 0.05:
        return (f"With {n} paired test cases the smallest p-value a two-sided Wilcoxon signed-rank test can give is "
                f"2/2^{n} = {floor:.3g}: **no comparison can reach p < 0.05 on this test split**, whatever the effect; "
                "a larger test split is needed for that.")
    return f"With {n} paired test cases the smallest attainable two-sided Wilcoxon p is 2/2^{n} = {floor:.2g}."


def shift_text(d: dict[str, Any]) -> str:
    """One variation as the protocol lists it: the old scanner shifts with their numbers, a family
    of the realistic suite by its name (its parameters are in the configuration block).

    Parameters
    ----------
    d : dict
        One variation's ``to_dict``.

    Returns
    -------
    str
        Markdown text.
    """
    if "family" not in d:
        return f"`{d['name']}` (HU x{d['scale']} {d['offset']:+g}, noise {d['noise']:g} HU, blur {d['blur_mm']:g} mm)"
    return f"`{d['name']}`"


def claim_words(verdict: str, size: str) -> str:
    """The paper's claim (CT+GBM beats CT when training data are scarce) judged by one CI, in words.

    Parameters
    ----------
    verdict : str
        :func:`~globalmask.study.stats.effect_verdict` of CT+GBM against CT.
    size : str
        The training size.

    Returns
    -------
    str
        The verdict in words.
    """
    words = {
        "better": "holds: CT+GBM better (CI above 0)",
        "worse": "does not hold: CT+GBM worse (CI below 0)",
        "no difference shown": "not shown: the CI includes 0",
    }[verdict]
    return words + (" (the paper claims nothing at the full size)" if size == "all" else "")


def test_sets_section(results: StudyResults) -> list[str]:
    """Mean Dice per test set and mode, and every paired comparison per test set with its bootstrap CI.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines; none without per-set comparisons.
    """
    by_set = results.set_comparisons
    if by_set.empty:
        return []
    plan, summary, recipe = results.plan, results.summary, results.sweep_recipe
    n_train = plan.n_train
    sets = list(plan.test_sets)
    sizes_of = {e.name: len(e.case_ids) for e in plan.external} | {"test": len(plan.split.test)}
    pooled_n = sum(sizes_of.get(s, 0) for s in sets)
    lines = ["## 2b. Every test set: paired effects with 95% bootstrap confidence intervals", ""]
    if plan.external:
        lines += [
            "External test sets (scored by every model after training; nothing read from them chose a recipe, a "
            "checkpoint or a plateau): "
            + ", ".join(
                f"`{e.name}` ({len(e.case_ids)} cases, fingerprint `{e.fingerprint[:16]}`)" for e in plan.external
            )
            + f". *pooled* = the test split and every external set: {pooled_n} patients.",
            "",
        ]
        rows = []
        for size in results.sizes:
            for mode in plan.config.modes:
                row: dict[str, Any] = {"training cases": size if size != "all" else f"all ({n_train})", "mode": mode}
                for subset in sets:
                    r = _row(summary, recipe=recipe, mode=mode, size=size, subset=subset, shift="none", structure="all")
                    row[subset] = "n/a" if r is None else mean_std_text(r["dice_mean"], r["dice_std"])
                rows.append(row)
        lines += [
            f"Mean Dice over the {len(plan.structures)} structures per test set (mean ± std over draws, cases and "
            "structures):",
            "",
            _md_table(pd.DataFrame(rows)),
            "",
        ]
    lines += [
        "Relative change of mean Dice (A - B) / B x 100 with a 95% percentile bootstrap CI (10 000 replicates "
        "resampling patients and, "
        "separately, draws: `stats.bootstrap_relative_change`); p: two-sided Wilcoxon signed-rank test over patients "
        "(each patient's Dice "
        "averaged over structures and draws). *Verdict* reads the CI only.",
        "",
    ]
    rows = []
    for c in by_set.to_dict(orient="records"):
        claim = claim_words(c["verdict"], c["size"]) if (c["a"], c["b"]) == ("ct+gbm", "ct") else c["verdict"]
        rows.append({
            "comparison": f"{c['a']} vs {c['b']}",
            "training cases": c["size"],
            "test set": c["test_set"],
            "patients": c["n_patients"],
            "draws": c["n_draws"],
            "Dice A": f"{c['dice_a']:.3f}",
            "Dice B": f"{c['dice_b']:.3f}",
            "change": f"{c['relative_change_pct']:+.1f}%",
            "95% CI": f"{c['ci_low_pct']:+.1f}% to {c['ci_high_pct']:+.1f}%",
            "patients A better": f"{c['patients_a_better']}/{c['n_patients']}",
            "Wilcoxon p": f"{c['wilcoxon_p']:.3g}",
            "verdict (paper's claim for CT+GBM vs CT)": claim,
        })
    lines += [_md_table(pd.DataFrame(rows)), ""]
    return lines


def convergence_section(results: StudyResults) -> list[str]:
    """How many models reached a validated plateau; every one that did not is named.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines; none without runs.
    """
    runs = results.runs
    if not runs:
        return []
    conv = [r for r in runs if r.converged]
    not_conv = [r for r in runs if r.converged is False]
    unjudged = [r for r in runs if r.converged is None]
    lines = ["## Training: did every model reach its plateau?", ""]
    if results.config.patience is None:
        lines += [
            f"**No plateau rule: every model ran to its maximum number of steps** (validation every "
            f"{results.config.val_every} steps) and is the checkpoint with the best validation Dice; the table gives "
            "the mean best step (bests near the maximum say validation may still have been rising).",
            "",
        ]
        unjudged = []
    else:
        lines += [
            f"**{len(conv)} of {len(runs)} models converged** (validation Dice stopped rising by more than "
            f"`min_delta` = {results.config.min_delta} for `patience` = {results.config.patience} checks, "
            f"every {results.config.val_every} steps, before the maximum number of steps). "
            "Each model is the checkpoint with the best validation Dice.",
            "",
        ]
    if not_conv:
        lines += [
            "Models that reached their maximum number of steps before a validated plateau (validation Dice may still "
            "have been rising, so their figures are a lower bound of what the setting can reach):",
            "",
        ]
        rows = [{"run": r.run_id, "steps (max)": f"{r.steps} ({r.max_steps})", "best step": r.best_step,
                 "best validation Dice": "n/a" if r.best_val_dice is None else f"{r.best_val_dice:.3f}"}
                for r in not_conv]
        lines += [_md_table(pd.DataFrame(rows)), ""]
    if unjudged:
        lines += [
            f"{len(unjudged)} model(s) ran without a plateau rule (patience off or no validation cases): not judged.",
            "",
        ]
    steps = pd.DataFrame([{"recipe": r.recipe, "mode": r.mode, "size": r.size_label, "steps": r.steps,
                           "best_step": r.best_step, "minutes": r.train_seconds / 60} for r in runs])
    tab = steps.groupby(["recipe", "size", "mode"], sort=False).agg(
        models=("steps", "size"), steps=("steps", "mean"), best_step=("best_step", "mean"), minutes=("minutes", "mean")
    ).reset_index()
    for c in ("steps", "best_step"):
        tab[c] = tab[c].map(lambda v: f"{v:.0f}")
    tab["minutes"] = tab["minutes"].map(lambda v: f"{v:.1f}")
    lines += [
        "Mean steps run, best step and training minutes per model:",
        "",
        _md_table(tab.rename(columns={"best_step": "best step", "minutes": "training minutes"})),
        "",
    ]
    return lines


def compute_table(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """What the study's models cost, per stage and device, in hours of compute summed from the records.

    On a CPU a run's compute is its wall time x its torch threads (two one-thread runs side by side on
    two cores cost two CPU-hours per hour); on an accelerator it is the wall time. A record whose total
    is below its training time (a resumed run recorded before the runner counted every sitting) is
    counted at its training time, so the totals are then a lower bound.

    Parameters
    ----------
    runs : sequence of RunSummary
        The study's runs.

    Returns
    -------
    pandas.DataFrame
        One row per stage (``role``) and device, then an ``all`` row: models, training hours, total
        hours (preparation and scoring included), hours per model and records counted at their
        training time.
    """
    rows = []
    for r in runs:
        scale = r.threads if r.device == "cpu" else 1
        rows.append({"stage": r.role, "device": r.device or "unknown", "train_h": r.train_seconds * scale / 3600,
                     "total_h": max(r.total_seconds, r.train_seconds) * scale / 3600,
                     "short": int(r.total_seconds < r.train_seconds)})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    parts = [df.groupby(["stage", "device"], sort=True), df.assign(stage="all").groupby(["stage", "device"])]
    tab = pd.concat([g.agg(models=("train_h", "size"), train_h=("train_h", "sum"), total_h=("total_h", "sum"),
                           short=("short", "sum")).reset_index() for g in parts], ignore_index=True)
    tab["per_model_h"] = tab["total_h"] / tab["models"]
    return tab


def compute_section(results: StudyResults) -> list[str]:
    """The study's compute in CPU-hours (or device hours), stated from the records alone.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines; none without runs.
    """
    tab = compute_table(results.runs)
    if tab.empty:
        return []
    unit = {"cpu": "CPU-hours"}
    lines = ["## Compute: what the models cost", ""]
    for _, row in tab[tab["stage"] == "all"].iterrows():
        u = unit.get(row["device"], f"{row['device']} hours")
        n = f"{row['models']} model{'s' if row['models'] != 1 else ''}"
        lines.append(f"**{n} on `{row['device']}`: {row['total_h']:.1f} {u}** in all "
                     f"({row['train_h']:.1f} of training, the rest data preparation and scoring on every test set "
                     f"and variation; {row['per_model_h']:.2f} per model).")
    lines += [
        "",
        "A CPU run's hours are its wall time x its torch threads, summed from the records' `train_seconds`, "
        "`total_seconds` and `machine.threads`; pending runs are not counted.",
        "",
    ]
    short = int(tab.loc[tab["stage"] == "all", "short"].sum())
    if short:
        lines += [f"{short} record(s) state a total below their training time (a resumed run recorded before the "
                  "runner summed every sitting): they count at their training time, so the totals are a lower "
                  "bound by their scoring time.", ""]
    show = tab.rename(columns={"train_h": "training hours", "total_h": "total hours", "per_model_h": "hours per model",
                               "short": "counted at training time"})
    for c in ("training hours", "total hours", "hours per model"):
        show[c] = show[c].map(lambda v: f"{v:.2f}")
    lines += [_md_table(show), ""]
    return lines


def write_outputs(
    results: StudyResults,
    out: str | Path,
    command: str | None = None,
    runs_dir: str | Path | None = None,
    dataset: str | Path | None = None,
) -> Path:
    """Write every file of a study's report into ``out`` and return the path of ``report.md``.

    Parameters
    ----------
    results : StudyResults
        The study's statistics (:func:`~globalmask.study.analyse`).
    out : str or Path
        The report folder: per_case.csv, summary.csv, results.json, recipe_choice.json,
        subsets.json, the figures and report.md.
    command : str, optional
        The command that made the study, quoted in the report.
    runs_dir : str or Path, optional
        A study folder's ``runs/`` with the predictions, for the overlay figures.
    dataset : str or Path, optional
        Where the study's data lie on this machine, for the overlay figures.

    Returns
    -------
    Path
        ``out/report.md``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "per_case.csv", results.per_case.to_csv(index=False))
    write_text(out / "summary.csv", results.summary.to_csv(index=False))
    write_json(out / "results.json", results.to_json())
    if results.recipe_winner is not None:
        write_json(
            out / "recipe_choice.json",
            {
                "winner_on_validation": results.recipe_winner,
                "sweep_recipe": results.sweep_recipe,
                "ranking": results.to_json()["recipe_ablation"],
            },
        )
    if results.subsets:
        write_json(out / "subsets.json", results.subsets)
    return write_report(out, results, command=command, runs_dir=runs_dir, dataset_root=dataset)


def write_report(
    study_dir: str | Path,
    results: StudyResults,
    command: str | None = None,
    runs_dir: str | Path | None = None,
    reference: str | None = None,
    dataset_root: str | Path | None = None,
) -> Path:
    """Write the figures and ``report.md`` into ``study_dir``, section by section.

    Parameters
    ----------
    study_dir : str or Path
        The report folder.
    results : StudyResults
        The study's statistics.
    command : str, optional
        The command that made the study, quoted under "Reproduce with".
    runs_dir : str or Path, optional
        A study folder's ``runs/``: overlay figures when it holds the predictions.
    reference : str, optional
        A closing paragraph (where the figures are cited, say).
    dataset_root : str or Path, optional
        Where the study's data lie, when not where the records say.

    Returns
    -------
    Path
        ``study_dir/report.md``.
    """
    out = Path(study_dir)
    config = results.config
    sweep = _has_sweep(results)
    main_recipe = results.sweep_recipe or ""
    curves = plot_learning_curves(results.per_case, results.plan.n_train, out, main_recipe) if sweep else []
    box = plot_boxplots(results.per_case, out, main_recipe) if sweep else None
    shift_fig = plot_shift(results.shift_drops, out) if sweep else None
    overlays = (
        plot_overlays(Path(runs_dir), results, config.overlays, out, dataset_root)
        if (config.overlays and runs_dir is not None and sweep)
        else []
    )
    lines = [
        *header_section(results, command),
        *convergence_section(results),
        *compute_section(results),
        *gbm_only_section(results),
        *scarcity_section(results, curves),
        *comparisons_section(results),
        *test_sets_section(results),
        *robustness_section(results, shift_fig),
        *ablation_section(results),
    ]
    if config.reference and sweep:
        lines += paper_section(results.summary, results.comparisons, config, main_recipe, results.plan.n_train)
    lines += figures_section(results, box, overlays) + files_section(results)
    if reference:
        lines += [reference, ""]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _has_sweep(results: StudyResults) -> bool:
    """Whether any record of the stage-2 sweep is in: the figures and the paper's table need one."""
    per_case = results.per_case
    return (
        results.sweep_recipe is not None
        and not per_case.empty
        and bool((per_case["recipe"] == results.sweep_recipe).any())
    )


def _size_name(size: str, n_train: int) -> str:
    return size if size != "all" else f"all ({n_train})"


def header_section(results: StudyResults, command: str | None) -> list[str]:
    """Title, how to reproduce, the plan's identity, the protocol in brief and every training setting.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.
    command : str, optional
        The command that made the study.

    Returns
    -------
    list of str
        The section's lines.
    """
    config, plan = results.config, results.plan
    main_recipe = results.sweep_recipe or ""
    lines = [f"# globalmask study: {plan.dataset_name}", ""]
    if results.n_pending:
        lines += [
            f"**Incomplete: {results.n_pending} run(s) of this plan have no record yet** (listed at the end); "
            "every statistic below uses the finished runs only, and paired comparisons only the (size, draw) pairs "
            "both modes have finished.",
            "",
        ]
    lines += [
        "Reproduce with:",
        "",
        "```",
        command or "globalmask study run DATASET --config study.yaml",
        "```",
        "",
        f"Plan `{plan.hash}`; dataset `{plan.dataset_name}` (content fingerprint `{plan.dataset_fingerprint[:16]}`); "
        f"split from {plan.split_source}: "
        f"{plan.n_train} train / {len(plan.split.validation)} validation / {len(plan.split.test)} test cases. "
        f"Structures: {', '.join(plan.structures)}.",
        "",
        "## Protocol",
        "",
        f"* Input modes: {', '.join(config.modes)}; GBM recipe `{main_recipe or 'pending (stage 1 incomplete)'}`"
        + (
            " (chosen automatically: the ablation's winner on the validation split, section 4)"
            if config.recipe == "auto"
            else ""
        )
        + f"; training sizes {', '.join(results.sizes)} "
        f"({config.draws} seeded draws each, {config.full_draws or config.draws} at the full size). "
        "The training cases of a (size, draw) are the same for every mode (`subsets.json`), so all comparisons are "
        "paired.",
        (
            f"* Training stops at a validated plateau (patience {config.patience} checks, "
            f"min_delta {config.min_delta}) or at the maximum number of steps; "
            if config.patience is not None
            else "* Training runs to the maximum number of steps (no plateau rule); "
        )
        + "each model keeps the checkpoint with the best validation Dice; the test split is used once per model, at "
        "the end.",
        "* Metrics per test case and structure, on the scan's own grid: Dice; centre-of-mass (CoM) distance in mm "
        "from the affine; "
        "HD95 in mm. An empty prediction of a present structure is a *miss*: Dice 0, distances undefined, counted in "
        "'missed'.",
        "* Summaries are mean ± sample std over (draw, test case, structure) scores.",
        "* **Relative improvement** of mode A over mode B at a size = (mean Dice A - mean Dice B) / mean Dice B x 100. "
        "**p** is a two-sided Wilcoxon signed-rank test pairing the test cases (each case's Dice averaged over draws "
        "and structures).",
        *_robustness_protocol(config),
        "",
        "Training settings (`plan.json` and every record hold all):",
        "",
        "```yaml",
        yaml.safe_dump(config.to_dict(), sort_keys=False).strip(),
        "```",
        "",
    ]
    return lines


def _robustness_protocol(config: StudyConfig) -> list[str]:
    """The protocol's robustness bullet; none for a study without variations."""
    if not config.shifts:
        return []
    who = (
        "every model also segments"
        if config.shift_sizes is None
        else f"the models at training sizes {', '.join(str(v) for v in config.shift_sizes)} also segment"
    )
    return [
        f"* Robustness: {who} the test CTs after simulated scanner and patient variations "
        + ", ".join(shift_text(s) for s in config.shifts if isinstance(s, dict))
        + "; the GBM is recomputed from the varied CT, and a pose change moves the reference labels with it "
        "(`globalmask.shift`)."
    ]


def gbm_only_section(results: StudyResults) -> list[str]:
    """Section 1: the GBM-only models at the full training size, per structure.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines.
    """
    summary, main_recipe, modes = results.summary, results.sweep_recipe or "", results.config.modes
    lines = ["## 1. GBM only: localisation and segmentation from shape and position", ""]
    rows = []
    for structure in [*results.plan.structures, "all"]:
        r = _row(summary, recipe=main_recipe, mode="gbm", size="all", subset="test", shift="none", structure=structure)
        if r is None:
            continue
        rows.append(
            {
                "structure": structure,
                "Dice": mean_std_text(r["dice_mean"], r["dice_std"]),
                "CoM error (mm)": mean_std_text(r["com_mm_mean"], r["com_mm_std"], 2),
                "HD95 (mm)": mean_std_text(r["hd95_mm_mean"], r["hd95_mm_std"], 2),
                "missed": int(r["missed"]),
            }
        )
    if rows:
        lines += [
            f"GBM-only models at the full training size ({results.plan.n_train} cases), test split:",
            "",
            _md_table(pd.DataFrame(rows)),
            "",
        ]
    elif "gbm" not in modes:  # keep the numbering of the other sections, but say why this one is empty
        lines += [f"Not part of this study (its input modes are {', '.join(modes)}).", ""]
    return lines


def scarcity_section(results: StudyResults, figures: Sequence[str]) -> list[str]:
    """Section 2: Dice and CoM error by training-set size and mode, the spread over draws, the curves.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.
    figures : sequence of str
        File names of the Dice and CoM curves (none: no figures).

    Returns
    -------
    list of str
        The section's lines.
    """
    summary, main_recipe, modes, n_train = (
        results.summary,
        results.sweep_recipe or "",
        results.config.modes,
        results.plan.n_train,
    )
    lines = ["## 2. Data scarcity: Dice by training-set size", ""]
    for metric, digits, title, column in (
        ("dice", 3, None, "{mode}"),
        ("com_mm", 2, "Centre-of-mass error (mm):", "{mode} CoM (mm)"),
    ):
        rows = []
        for size in results.sizes:
            row: dict[str, Any] = {"training cases": _size_name(size, n_train)}
            for mode in modes:
                r = _row(
                    summary, recipe=main_recipe, mode=mode, size=size, subset="test", shift="none", structure="all"
                )
                row[column.format(mode=mode)] = (
                    "n/a" if r is None else mean_std_text(r[f"{metric}_mean"], r[f"{metric}_std"], digits)
                )
            rows.append(row)
        lines += ([title, ""] if title else []) + [_md_table(pd.DataFrame(rows)), ""]
    spread = draw_spread_table(results.runs, main_recipe, results.sizes, modes, n_train)
    if not spread.empty:
        lines += ["Spread over draws: each draw's mean test Dice (draw 0 / 1 / ...; its own training cases and seed) "
                  "and the range between draws: how far one draw of training cases can move a figure. The modes "
                  "share each draw's training cases, so compare them draw by draw.", "", _md_table(spread), ""]
    if figures:
        lines += [f"![Dice vs training cases]({figures[0]})", f"![CoM error vs training cases]({figures[1]})", ""]
    return lines


def comparisons_section(results: StudyResults) -> list[str]:
    """The paired comparisons of modes (all structures pooled), then CT+GBM over CT per structure.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines; none without comparisons.
    """
    comps = results.comparisons
    if comps.empty:
        return []
    lines = ["### Paired comparisons (test split, all structures pooled)", ""]
    rows = [
        {
            "comparison": f"{c['a']} vs {c['b']}",
            "training cases": c["size"],
            "Dice A": f"{c['dice_a']:.3f}",
            "Dice B": f"{c['dice_b']:.3f}",
            "relative improvement": _rel(c),
            "cases A better": f"{c['cases_a_better']}/{c['n_cases']}",
            "Wilcoxon p": f"{c['wilcoxon_p']:.3g}",
        }
        for c in comps[comps["structure"] == "all"].to_dict(orient="records")
    ]
    lines += [_md_table(pd.DataFrame(rows)), ""]
    c_s = comps[(comps["a"] == "ct+gbm") & (comps["b"] == "ct") & (comps["structure"] != "all")]
    if not c_s.empty:
        lines += [
            "Relative improvement of CT+GBM over CT per structure (%, p in brackets; where CT's mean Dice is below "
            "0.01 a percentage is meaningless and both means are shown instead):",
            "",
        ]
        piv = []
        for structure in results.plan.structures:
            row = {"structure": structure}
            for size in results.sizes:
                c = c_s[(c_s["structure"] == structure) & (c_s["size"] == size)]
                row[size] = "n/a" if c.empty else f"{_rel(c.iloc[0])} ({c.iloc[0]['wilcoxon_p']:.2g})"
            piv.append(row)
        lines += [_md_table(pd.DataFrame(piv)), ""]
    return lines


def robustness_section(results: StudyResults, figure: str | None) -> list[str]:
    """Section 3: the Dice drop under each simulated scanner change, per mode and training size.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.
    figure : str, optional
        File name of the shift figure, shown under the table.

    Returns
    -------
    list of str
        The section's lines; none without shifted scores. A study whose shifts carry a family (the
        realistic suite) gets :func:`family_robustness_section` instead.
    """
    if shift_families(results.config.shifts):
        return family_robustness_section(results, figure)
    drops, modes = results.shift_drops, results.config.modes
    if drops.empty:
        return []
    lines = [
        "## 3. Robustness to a simulated scanner change",
        "",
        "Dice drop (unshifted - shifted mean Dice; positive = worse) per mode and training size:",
        "",
    ]
    piv = drops.pivot_table(index=["size", "shift"], columns="mode", values="dice_drop", sort=False).reset_index()
    piv = piv[["size", "shift", *[m for m in modes if m in piv.columns]]]
    for m in modes:
        if m in piv.columns:
            piv[m] = piv[m].map(lambda v: "n/a" if pd.isna(v) else f"{v:+.3f}")  # n/a: that model has no record yet
    lines += [_md_table(piv), ""]
    if figure:
        lines += [f"![Dice drop under intensity shift]({figure})", ""]
    return lines


#: How each family reaches a model's input, said where the target breaks (the likely mechanism; the
#: GBM is recomputed from the varied CT, as it would be in practice).
FAMILY_MECHANISMS = {
    "voltage": ("another tube voltage changes the HU of bone and iodine but not of soft tissue, so the edges of a GBM "
                "cut at a fixed HU threshold move while the soft tissue a CT model reads stays"),
    "dose": ("quantum noise flips voxels near the GBM's HU threshold and speckles the recomputed mask, while a CT "
             "model averages the noise over its receptive field"),
    "kernel": ("a sharp kernel adds noise and a smooth one blurs edges at the GBM's HU threshold, so the recomputed "
               "mask gains speckle or loses thin parts"),
    "thickness": ("thick slices average thin bone with soft tissue along the superior-inferior axis, so thin parts "
                  "fall below the GBM's HU threshold and leave the recomputed mask"),
    "metal": ("metal streaks of hundreds of HU cross the GBM's HU threshold and paint false structures, or holes, "
              "into the recomputed mask"),
    "fov": ("the truncated field of view empties the body outside it, so the recomputed GBM loses part of the "
            "anatomy a GBM model locates structures by"),
    "pose": ("a GBM-only model locates structures by the mask's shape and position, which a rotated or shifted "
             "patient puts where no training case had it, while a CT model also reads local appearance (the "
             "reference labels move with the patient)"),
    "contrast": ("the enhanced blood pool crosses the GBM's HU threshold, so heart and aorta enter or leave the "
                 "recomputed mask"),
    "scanner": ("an HU scale and offset move every voxel against the GBM's HU threshold, and noise and blur roughen "
                "its edges"),
}


def _drop_cell(row: pd.Series | None) -> str:
    if row is None:
        return "n/a"
    return f"{row['dice_drop']:+.3f}" + ("" if pd.isna(row["drop_sd"]) else f" ± {row['drop_sd']:.3f}")


def family_drop_table(drops: pd.DataFrame, modes: Sequence[str], sizes: Sequence[str], n_train: int) -> pd.DataFrame:
    """Rows family and level, columns mode and training size: mean Dice drop ± per-patient spread.

    Parameters
    ----------
    drops : pandas.DataFrame
        :func:`~globalmask.study.stats.family_drops` of one test set.
    modes : sequence of str
        The study's modes, in column order.
    sizes : sequence of str
        The training sizes in column order; sizes without a varied score are left out.
    n_train : int
        The training split's size, to name the full size.

    Returns
    -------
    pandas.DataFrame
        The table as text (``n/a`` where a model has no record yet).
    """
    present = set(drops["size"])
    sizes = [s for s in [*sizes, *dict.fromkeys(drops["size"])] if s in present]
    sizes = list(dict.fromkeys(sizes))
    cells = {(r["shift"], r["mode"], r["size"]): r for _, r in drops.iterrows()}
    rows = []
    for shift, g in drops.groupby("shift", sort=False):
        row: dict[str, Any] = {"family": g["family"].iloc[0], "level": g["level"].iloc[0]}
        for size in sizes:
            for mode in modes:
                row[f"{mode}, {_size_name(size, n_train)}"] = _drop_cell(cells.get((shift, mode, size)))
        rows.append(row)
    return pd.DataFrame(rows)


#: A family whose every break is smaller than this (in Dice) breaks the target only on paper: a tenth of a
#: Dice point, far below the spread between training draws or patients of any study here.
NEGLIGIBLE_EXCESS = 0.001

#: Mode names in the words of the robustness target.
MODE_WORDS = {"ct": "CT-only", "gbm": "GBM-only", "ct+gbm": "CT+GBM", "ct+coords": "CT+coords"}


def _signed(value: float, other: float) -> str:
    text = against_target(value, other, 3)
    return text if text.startswith("-") else f"+{text}"


def _break_text(b: dict[str, Any], n_train: int) -> str:
    paired = "" if pd.isna(b["excess_vs_ref"]) else (
        f"; paired excess {b['excess_vs_ref']:+.3f}"
        + ("" if pd.isna(b["excess_se"]) else f" ± {b['excess_se']:.3f} SE over {b['n_paired']} patients"))
    drop, ref = b["dice_drop"], b["ref_drop"]
    who = MODE_WORDS.get(b["mode"], b["mode"])
    return (f"{who} at {b['level']}, {_size_name(b['size'], n_train)} training cases: drop {_signed(drop, ref)} "
            f"vs CT-only {_signed(ref, drop)}{paired}")


def family_verdict_line(verdict: dict[str, Any], n_train: int) -> str:
    """One family's verdict on the robustness target, in words, with the why where it breaks.

    Parameters
    ----------
    verdict : dict
        One row of :func:`~globalmask.study.stats.family_verdicts`.
    n_train : int
        The training split's size, to name the full size.

    Returns
    -------
    str
        A markdown bullet.
    """
    family, breaks, judged = verdict["family"], verdict["breaks"], verdict["judged"]
    if verdict["verdict"] == "not judged":
        return (f"* **{family}: not judged**: no CT-only model has a score under this family at a training size of "
                "the other modes yet.")
    if verdict["verdict"] == "holds":
        return f"* **{family}: holds** at every level and training size ({judged} comparisons with CT-only)."
    levels = ", ".join(dict.fromkeys(b["level"] for b in breaks))
    real = [b for b in breaks if not pd.isna(b["excess_se"]) and b["excess_vs_ref"] > 2 * b["excess_se"]]
    mechanism = FAMILY_MECHANISMS.get(
        family,
        "the GBM is recomputed from the varied CT, so whatever the variation does "
        "at the GBM's HU threshold reaches the GBM models' input directly",
    )
    largest = max(b["dice_drop"] - b["ref_drop"] for b in breaks)
    if largest < NEGLIGIBLE_EXCESS:
        label = "does not hold, negligibly"
        why = (f"every excess is below {NEGLIGIBLE_EXCESS} Dice (a tenth of a Dice point), "
               f"too small to matter whether or not it is chance; were it larger, the likely mechanism: {mechanism}.")
    elif real:
        label = "does not hold"
        where = "" if len(breaks) == 1 else f" in {len(real)} of these {len(breaks)} comparisons"
        why = (f"the paired excess is more than twice its standard error{where}, so the break is not chance alone; "
               f"the likely mechanism: {mechanism}.")
    else:
        label = "does not hold, within noise"  # the reader sees the size of it first
        why = (
            "every paired excess is within twice its standard error (or unpaired), so the break may be chance and more "
            f"patients would tell; if it is real, the likely mechanism: {mechanism}."
        )
    places = 3 if largest >= NEGLIGIBLE_EXCESS else 4 if round(largest, 4) < NEGLIGIBLE_EXCESS else 5
    size = f"{largest:+.{places}f}"  # a negligible 0.00097 never reads "+0.001"
    return (f"* **{family}: {label}** (largest excess over CT-only's drop {size}) at {levels} ({len(breaks)} of "
            f"{judged} comparisons with CT-only): " + "; ".join(_break_text(b, n_train) for b in breaks)
            + f". Why: {why}")


def _verdict_lines(rows: list[dict[str, Any]], n_train: int) -> list[str]:
    """A bullet per judged family; the families that wait for CT-only models share one."""
    waiting = [v for v in rows if v["verdict"] == "not judged"]
    lines = [family_verdict_line(v, n_train) for v in rows if v["verdict"] != "not judged"]
    if len(waiting) > 1:
        lines += [f"* **not judged yet**: {', '.join(v['family'] for v in waiting)}: no CT-only model has a score "
                  "under them at a training size of the other modes yet."]
    elif waiting:
        lines += [family_verdict_line(waiting[0], n_train)]
    return lines


def family_robustness_section(results: StudyResults, figure: str | None) -> list[str]:
    """Section 3 for a study of the realistic suite: per test set, the Dice drop per family and level,
    mode and training size, and whether the target holds per family.

    Parameters
    ----------
    results : StudyResults
        The study's statistics; ``results.family_drops`` holds the drops.
    figure : str, optional
        File name of the shift figure (test split), shown at the end.

    Returns
    -------
    list of str
        The section's lines; none without varied scores.
    """
    drops, plan, config = results.family_drops, results.plan, results.config
    if drops.empty:
        return []
    targets = " and ".join(f"{MODE_WORDS.get(m, m)} (`{m}`)" for m in TARGET_MODES if m in config.modes)
    lines = [
        "## 3. Robustness to simulated scanner and patient variations",
        "",
        "Mean Dice drop per variation family and level (clean minus varied mean Dice over the same draws, patients "
        "and structures; positive = worse); columns: mode, training cases; ± is the sample standard deviation of "
        "the per-patient drops (each patient's drop averaged over draws and structures). A pose change moves the "
        "reference labels with the patient.",
        "",
        f"Target: under every family and level, the mean drop of {targets or 'the GBM modes'} is no larger than "
        f"{MODE_WORDS[REFERENCE_MODE]}'s (`{REFERENCE_MODE}`) at the same training size. Where it breaks, the "
        "*paired excess* is the mean over patients of (mode's drop - CT-only's drop) with its standard error.",
        "",
    ]
    verdicts = family_verdicts(drops)
    for test_set in plan.test_sets:
        d = drops[drops["test_set"] == test_set]
        if d.empty:
            off = test_set != "test" and not config.shifts_on_external
            why = "the study's `shifts_on_external` is off" if off else "no varied score yet"
            lines += [f"### Test set `{test_set}`", "", f"Not scored under the variations ({why}).", ""]
            continue
        n = int(d["n_patients"].max())
        table = family_drop_table(d, config.modes, results.sizes, plan.n_train)
        lines += [f"### Test set `{test_set}` ({n} patients)", "", _md_table(table), ""]
        rows = verdicts[verdicts["test_set"] == test_set].to_dict(orient="records")
        lines += ["Target per family:", "", *_verdict_lines(rows, plan.n_train), ""]
    if figure:
        lines += [f"![Dice drop under the variations]({figure})", ""]
    return lines


def ablation_section(results: StudyResults) -> list[str]:
    """Section 4: the GBM recipes ranked on the validation split, with their test figures beside.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines; none without ablation results.
    """
    ablation = results.recipe_ablation
    if ablation.empty:
        return []
    robust = results.config.recipe_rule == "robust"
    rule = (
        "the **robust rule** (benchmarks/robustness/README.md): among recipes whose clean validation Dice is within "
        f"{ELIGIBLE_MARGIN} of the best, the highest worst-case validation Dice over clean and every variation, a "
        f"tie within {TIE_MARGIN} "
        "going to the higher clean Dice"
        if robust
        else "fewest missed structures, then lowest CoM error, then highest Dice"
    )
    lines = [
        "## 4. GBM recipe ablation (GBM only, full training size)",
        "",
        f"Ranked on the **validation** split by {rule}: the choice never looks at the test split; test figures are "
        "reported beside it.",
        "",
    ]
    tab = ablation.copy()
    for c in tab.columns:
        if c.endswith("_dice"):
            tab[c] = tab[c].map(lambda v: f"{v:.3f}")
        elif c.endswith("_com_mm"):
            tab[c] = tab[c].map(lambda v: f"{v:.2f}")
    lines += [_md_table(tab), ""]
    if robust and not results.ablation_per_case.empty:
        dice = robust_recipe_table(results.ablation_per_case)
        if not dice.empty and "none" in dice.columns:
            ranking = robust_choice(dice)[1].reset_index()
            for c in ("clean", "worst", "worst_drop"):
                ranking[c] = ranking[c].map(lambda v: f"{v:.3f}")
            lines += ["Under the variation suite (validation, mean Dice; a miss scores 0):", "", _md_table(ranking), ""]
    winner = results.recipe_winner or "pending (every stage-1 record is needed)"
    return lines + [
        f"Winner on validation: `{winner}`; the sweep above used `{results.sweep_recipe or 'pending'}`.",
        "",
    ]


def figures_section(results: StudyResults, box: str | None, overlays: Sequence[str]) -> list[str]:
    """The per-structure box plot and the overlays, or how to get the overlays.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.
    box : str, optional
        File name of the box plot.
    overlays : sequence of str
        File names of the overlay figures.

    Returns
    -------
    list of str
        The section's lines.
    """
    lines = ["## Figures", ""]
    if box:
        lines += [f"![per-structure Dice]({box})", ""]
    for name in overlays:
        lines += [f"![overlay]({name})", ""]
    if results.config.overlays and not overlays:
        lines += [
            "(Overlays need the dataset and the run folders' predictions on this machine: `globalmask study report "
            "... --runs STUDY/runs`, "
            "with `--dataset DIR` where the data lie elsewhere than the records say; the records alone do not hold "
            "images.)",
            "",
        ]
    return lines


def files_section(results: StudyResults) -> list[str]:
    """What each file of the report folder holds, and the runs still pending.

    Parameters
    ----------
    results : StudyResults
        The study's statistics.

    Returns
    -------
    list of str
        The section's lines.
    """
    lines = [
        "## Files",
        "",
        "* `per_case.csv`: one row per (run, subset, shift, case, structure), long format.",
        "* `summary.csv`: mean ± std per (mode, size, shift, structure).",
        "* `results.json`: summaries, paired comparisons, shift drops, recipe ablation, one line per run.",
        "* `plan.json` (where the study ran): the plan's hash, configuration, dataset fingerprint and split.",
        "* `records/<run_id>.json`: the run records this report was computed from (`globalmask study report records/ "
        "--out DIR` regenerates it).",
        "* `runs/<run>/` (where the study ran): the model (`model/model.pt`), its training history and test "
        "predictions.",
        "",
    ]
    if results.n_pending:
        later = (
            [f"* stage 2 (sweep): {results.unplanned} runs, planned once every recipe-ablation record is in"]
            if results.unplanned
            else []
        )
        lines += ["## Pending runs", "", *[f"* `{p}`" for p in results.pending], *later, ""]
    return lines
