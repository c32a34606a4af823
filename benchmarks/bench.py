"""globalmask benchmarks: each figure measured side by side in one run and reported as a ratio.

Run from the repository root (needs ../shared/data for the OpenKBP cases):

    .venv/bin/python benchmarks/bench.py                 # everything, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench.py --sections gbm  # one section
    .venv/bin/python benchmarks/bench.py --device cuda --out benchmarks/RESULTS-gpu.md
    .venv/bin/python benchmarks/bench.py --sections predict --reps 20 --merge   # rerun one section of RESULTS.md

Sections:
  train    full globalmask training step vs the bare network step on tensors in memory, per input
           mode; vs a plain MONAI loop (CacheDataset + DataLoader + the same network); the levers
           (channels_last_3d, torch.compile, bf16 autocast, threads) on/off.
  predict  `predict` end to end on one OpenKBP case vs the bare forward pass, untrained and trained
           network; folder throughput in turn and with read/write overlapped.
  gbm      each GBM recipe on a 512 x 512 x 200 int16 CT vs a plain SimpleITK threshold filter.
  memory   peak RSS of training and prediction per input size (separate processes).
  study    wall time per run by training size, and --workers 1 vs 2 on a small study.

Timings alternate between the two sides of each ratio (A B A B ...) and report medians, so slow
phases of a noisy machine hit both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# a cold torch.compile cache, so the first-compile time is what a fresh run pays
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="gm-bench-inductor-"))
import torch

ROOT = Path(__file__).resolve().parents[1]
OPENKBP = ROOT.parent / "shared" / "data" / "Dataset501_OpenKBPHeadNeck"
sys.path.insert(0, str(ROOT / "src"))

from globalmask.checkpoint import ModelSpec, save_model  # noqa: E402
from globalmask.dataset import load_dataset  # noqa: E402
from globalmask.infer import Predictor, pad_values, resolve_device, sliding_window_probs  # noqa: E402
from globalmask.io import write_text  # noqa: E402
from globalmask.masks import Recipe, available_recipes  # noqa: E402
from globalmask.model import NetConfig, make_input  # noqa: E402
from globalmask.training import DataConfig, TrainConfig, Trainer, prepare_data  # noqa: E402

#: The committed OpenKBP study's setting (benchmarks/openkbp/study.yaml).
SPACING = (6.0, 6.0, 6.0)
NET = NetConfig(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=1)
PATCH = (112, 64, 64)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def alternate(fa, fb, reps: int, warmup: int = 2) -> tuple[float, float]:
    """Median seconds of fa and fb, timed alternately."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(reps):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return float(np.median(ta)), float(np.median(tb))


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"


def _has_cpu_flag(flag: str) -> bool:
    try:
        return any(flag in line.split() for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except OSError:
        return False


def md_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# training step


def _prepared(recipe="bone"):
    return prepare_data(OPENKBP, DataConfig(recipe, SPACING), progress=False)


def _trainer(prepared, mode: str, device, ids=None, **cfg_kwargs) -> Trainer:
    ids = ids or list(prepared.split.train[:8])
    cfg = TrainConfig(mode=mode, steps=10_000, patch_size=PATCH, net=NET, **cfg_kwargs)
    spec = ModelSpec(mode, prepared.recipe, prepared.preprocess, prepared.dataset.labels, NET, PATCH)
    return Trainer(spec, cfg, [prepared.cases[i] for i in ids], prepared.preprocess.spacing, device)


def bench_train(device, reps: int) -> str:
    prepared = _prepared()
    rows = []
    for mode in ("ct", "gbm", "ct+gbm"):
        tr = _trainer(prepared, mode, device)
        x, y = tr.batch()
        full, bare = alternate(tr.step, lambda: tr.optimize(x, y), reps)
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            tr.batch()
        sync(device)
        data = (time.perf_counter() - t) / reps
        rows.append(
            {
                "mode": mode,
                "full step (s)": f"{full:.3f}",
                "bare network step (s)": f"{bare:.3f}",
                "data pipeline alone (s)": f"{data:.4f}",
                "full / bare": f"{full / bare:.3f}",
            }
        )
    text = (
        "### Training step vs bare network step (OpenKBP, 8 cases, 6 mm, patch 112x64x64, batch 2)\n\n"
        + md_table(rows)
    )

    # a plain MONAI loop a user would write, same network / loss / optimiser / patch
    monai_step, gm_step = _monai_loop_vs_globalmask(prepared, device, reps)
    text += "\n\n### Against a plain MONAI training loop (ct+gbm)\n\n" + md_table(
        [
            {
                "loop": "plain MONAI (CacheDataset + DataLoader + RandAffined)",
                "step (s)": f"{monai_step:.3f}",
                "globalmask / MONAI": f"{gm_step / monai_step:.3f}",
            },
            {"loop": "globalmask Trainer.step", "step (s)": f"{gm_step:.3f}", "globalmask / MONAI": "1.000"},
        ]
    )
    text += "\n\n" + _levers(prepared, device, reps)
    return text


def _monai_loop_vs_globalmask(prepared, device, reps: int) -> tuple[float, float]:
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        RandAffined,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        SpatialPadd,
    )

    ids = list(prepared.split.train[:8])
    items = [
        {
            "ct": prepared.cases[i].ct[None],
            "gbm": prepared.cases[i].gbm[None].astype(np.float32),
            "label": prepared.cases[i].label[None],
        }
        for i in ids
    ]
    tf = Compose(
        [
            SpatialPadd(["ct", "gbm", "label"], PATCH),
            RandSpatialCropd(["ct", "gbm", "label"], PATCH, random_size=False),
            RandAffined(
                ["ct", "gbm", "label"],
                prob=0.8,
                rotate_range=[np.deg2rad(15)] * 3,
                scale_range=[0.15] * 3,
                mode=["bilinear", "nearest", "nearest"],
                padding_mode="zeros",
            ),
            RandScaleIntensityd("ct", 0.1, prob=0.8),
            RandShiftIntensityd("ct", 0.1, prob=0.8),
            ConcatItemsd(["ct", "gbm"], "image"),
        ]
    )
    ds = CacheDataset(items, tf, progress=False)
    loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=0)
    net = _trainer(prepared, "ct+gbm", device).net  # same network, same memory format
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, include_background=False)
    it = iter(loader)

    def monai_step():
        nonlocal it
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        x = b["image"].as_tensor().to(device).contiguous(memory_format=torch.channels_last_3d)
        y = b["label"].as_tensor().to(device)
        loss = loss_fn(net(x), y.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync(device)

    tr = _trainer(prepared, "ct+gbm", device)
    return alternate(monai_step, lambda: (tr.step(), sync(device)), reps)


def _levers(prepared, device, reps: int) -> str:
    """What each lever buys on the bare network step (same batch), measured A/B."""
    rows = []
    base = _trainer(prepared, "ct+gbm", device, channels_last=False)
    x, y = base.batch()
    cl = _trainer(prepared, "ct+gbm", device, channels_last=True)
    xc = x.contiguous(memory_format=torch.channels_last_3d)
    a, b = alternate(lambda: base.optimize(x, y), lambda: cl.optimize(xc, y), reps)
    rows.append(
        {
            "lever": "channels_last_3d",
            "off (s)": f"{a:.3f}",
            "on (s)": f"{b:.3f}",
            "on / off": f"{b / a:.3f}",
            "kept": "yes" if b < a else "no",
        }
    )
    if device.type == "cpu":
        def bf16_step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = cl.net(xc)
            loss = cl.loss_fn(logits.float(), y.long())
            cl.opt.zero_grad()
            loss.backward()
            cl.opt.step()

        a, b = alternate(lambda: cl.optimize(xc, y), bf16_step, max(2, reps // 3), warmup=1)
        rows.append(
            {
                "lever": "bfloat16 autocast (CPU)",
                "off (s)": f"{a:.3f}",
                "on (s)": f"{b:.3f}",
                "on / off": f"{b / a:.3f}",
                "kept": "CUDA only: on CPU its effect on accuracy is unmeasured, and CPUs without native bf16"
                " (no avx512_bf16/AMX) run it 30-40x slower"
                + (" (this CPU has avx512_bf16)" if _has_cpu_flag("avx512_bf16") else ""),
            }
        )
    threads = torch.get_num_threads()
    if threads > 1:
        def one_thread():
            torch.set_num_threads(1)
            cl.optimize(xc, y)
            torch.set_num_threads(threads)

        t_n, t_1 = alternate(lambda: cl.optimize(xc, y), one_thread, reps)
        # N workers x 1 thread run N steps in t_1; 1 worker x N threads runs 1 step in t_n
        rows.append(
            {
                "lever": f"{threads} intra-op threads instead of 1",
                "off (s)": f"{t_1:.3f}",
                "on (s)": f"{t_n:.3f}",
                "on / off": f"{t_n / t_1:.3f}",
                "kept": f"one job uses all {threads} cores; a study runs {threads} workers x 1 thread:"
                f" {threads * t_n / t_1:.2f}x the throughput of 1 worker x {threads} threads",
            }
        )
    try:
        compiled = _trainer(prepared, "ct+gbm", device, channels_last=True)
        t0 = time.perf_counter()
        compiled.net = torch.compile(compiled.net)
        compiled.optimize(xc, y)
        first = time.perf_counter() - t0
        a, b = alternate(lambda: cl.optimize(xc, y), lambda: compiled.optimize(xc, y), reps)
        rows.append(
            {
                "lever": f"torch.compile (first step {first:.0f} s)",
                "off (s)": f"{a:.3f}",
                "on (s)": f"{b:.3f}",
                "on / off": f"{b / a:.3f}",
                "kept": "yes"
                if b < 0.95 * a and first < 0.05 * 1200 * a
                else "no: not faster by 5%, or the compile costs more than 5% of a 1200-step run",
            }
        )
    except Exception as exc:  # compile needs a C compiler; report rather than fail
        rows.append(
            {
                "lever": "torch.compile",
                "off (s)": "-",
                "on (s)": "-",
                "on / off": "-",
                "kept": f"unavailable ({type(exc).__name__})",
            }
        )
    return "### Levers on the network step (ct+gbm, same batch, A/B)\n\n" + md_table(rows)


# ----------------------------------------------------------------------------------------------
# prediction


def _model(tmp: Path, mode: str = "ct+gbm", spacing=SPACING) -> Path:
    """An untrained model at a grid spacing (timing does not depend on the weights)."""
    prepared = (
        _prepared()
        if tuple(spacing) == SPACING
        else prepare_data(
            OPENKBP,
            DataConfig("bone", tuple(spacing)),
            case_ids=list(load_dataset(OPENKBP).load_split().train[:1]),
            progress=False,
        )
    )
    spec = ModelSpec(mode, prepared.recipe, prepared.preprocess, prepared.dataset.labels, NET, PATCH)
    torch.manual_seed(0)
    return save_model(tmp / f"model_{spacing[0]:g}mm.pt", spec, spec.build().state_dict())


def _trained_model(tmp: Path, device, steps: int) -> Path:
    """The bench network trained for ``steps`` steps on 8 OpenKBP cases: its probabilities look
    like a real model's (background nearly everywhere), which is what the inversion's cost follows."""
    prepared = _prepared()
    tr = _trainer(prepared, "ct+gbm", device)
    torch.manual_seed(0)
    for _ in range(steps):
        tr.step()
    spec = ModelSpec("ct+gbm", prepared.recipe, prepared.preprocess, prepared.dataset.labels, NET, PATCH)
    return save_model(tmp / f"trained_{steps}steps.pt", spec, tr.net.state_dict())


def bench_predict(
    device,
    reps: int,
    spacings=((6.0, 6.0, 6.0), (3.0, 3.0, 3.0)),
    checkpoint: Path | None = None,
    train_steps: int = 100,
) -> str:
    from globalmask.io import read_volume

    ds = load_dataset(OPENKBP)
    split = ds.load_split()
    case = ds.cases[split.test[0]]
    images = [ds.cases[c].image for c in split.test]
    rows, text = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trained = checkpoint if checkpoint is not None else _trained_model(tmp, device, train_steps)
        trained_name = (
            f"trained ({checkpoint.parent.name}/{checkpoint.name})"
            if checkpoint is not None
            else f"trained ({train_steps} steps)"
        )
        models = [("untrained (worst case)", _model(tmp, spacing=s)) for s in spacings]
        models.insert(1, (trained_name, trained))  # right after the untrained model on the first grid
        for name, model in models:
            pred = Predictor(model, device=str(device))
            spacing = pred.spec.preprocess.spacing
            prepared = pred.prepare(read_volume(case.image))
            x = torch.as_tensor(make_input(pred.spec.mode, prepared.ct, prepared.gbm))
            pad = pad_values(pred.spec.mode)

            def bare():
                with torch.inference_mode():
                    sliding_window_probs(pred.net, x, pred.spec.patch_size, 3, pad, device, pred.spec.sw_overlap)
                sync(device)

            def end_to_end():
                pred.predict_files([case.image], tmp / "out", progress=False)
                sync(device)

            e2e, fwd = alternate(end_to_end, bare, reps)
            seq, ovl = alternate(
                lambda: pred.predict_files(images, tmp / "seq", progress=False, overlap=False),
                lambda: pred.predict_files(images, tmp / "ovl", progress=False, overlap=True),
                max(3, reps // 5),
                warmup=1,
            )
            rows.append(
                {
                    "network": name,
                    "grid": f"{spacing[0]:g} mm ({'x'.join(str(n) for n in x.shape[1:])})",
                    "end to end (s)": f"{e2e:.3f}",
                    "bare sliding-window forward (s)": f"{fwd:.3f}",
                    "end to end / bare": f"{e2e / fwd:.2f}",
                    f"folder of {len(images)} cases, in turn (cases/s)": f"{len(images) / seq:.2f}",
                    "read/write overlapped (cases/s)": f"{len(images) / ovl:.2f}",
                }
            )
            if model is trained:
                stages = _predict_stages(
                    pred, case.image, tmp / "stage.nii.gz", device, reps, Predictor(models[0][1], device=str(device))
                )
    text = f"### Prediction: end to end vs bare network (OpenKBP test case {case.id}, 128 x 128 x 128 CT)\n\n"
    text += md_table(rows)
    text += (
        f"\n\nWhere one end-to-end prediction spends its time ({trained_name}, {pred.spec.mode} network):\n\n"
        + md_table([{"stage": k, "seconds": f"{v:.4f}"} for k, v in stages.items()])
    )
    text += (
        "\n\nThe target (`predict` within 1.5x the bare forward pass) is judged on the trained network: what users"
        " predict with. The untrained network's argmax is noise all over the grid, the worst case for the inversion"
        " (which resamples only the box where a structure can win); its rows keep that visible."
        " End to end is `Predictor.predict_files` on one file (read, GBM, crop, resample, network, inversion, write)."
        " The folder columns predict the test cases one after the other, then with the next case read and prepared"
        " and the previous one written in background threads (`predict_files(..., overlap=True)`, the default on a GPU;"
        " on the CPU it is off, the network already using every core)."
    )
    return text


def _predict_stages(
    pred: Predictor, image: Path, out: Path, device, reps: int = 3, worst: Predictor | None = None
) -> dict[str, float]:
    from globalmask.io import read_volume, write_volume
    from globalmask.preprocess import restore_volume

    worst_probs = worst.probabilities(worst.prepare(read_volume(image))) if worst is not None else None
    runs: dict[str, list[float]] = {}
    for i in range(reps + 1):  # the first (cold) pass is dropped, the median of the others kept
        times: dict[str, float] = {}
        t = time.perf_counter()
        ct = read_volume(image)
        times["read NIfTI"] = time.perf_counter() - t
        t = time.perf_counter()
        prepared = pred.prepare(ct)
        times["GBM + reorient + crop + resample"] = time.perf_counter() - t
        t = time.perf_counter()
        probs = pred.probabilities(prepared)
        sync(device)
        times["sliding-window network"] = time.perf_counter() - t
        t = time.perf_counter()
        vol = restore_volume(probs, prepared.geometry)
        times["invert to the input grid"] = time.perf_counter() - t
        if worst_probs is not None and worst is not None:
            t = time.perf_counter()
            restore_volume(worst_probs, prepared.geometry)
            times["(invert, untrained network: worst case)"] = time.perf_counter() - t
        t = time.perf_counter()
        write_volume(vol, out)
        times["write NIfTI"] = time.perf_counter() - t
        if i:
            for k, v in times.items():
                runs.setdefault(k, []).append(v)
    return {k: float(np.median(v)) for k, v in runs.items()}


# ----------------------------------------------------------------------------------------------
# GBM generation


def big_ct():
    """A 512 x 512 x 200 int16 CT: an OpenKBP case resampled to 0.98 x 0.98 x 2.5 mm."""
    from globalmask.io import Volume, read_volume
    from globalmask.preprocess import resize

    ct = read_volume(OPENKBP / "imagesTr" / "openkbp_002_0000.nii.gz")
    arr = resize(ct.array.astype(np.float32), (512, 512, 200), "linear").numpy().round().astype(np.int16)
    aff = ct.affine.copy()
    aff[:3, :3] = aff[:3, :3] @ np.diag([128 / 512, 128 / 512, 128 / 200])
    return Volume(arr, aff)


def bench_gbm(reps: int) -> str:
    import SimpleITK as sitk

    ct = big_ct()
    img = sitk.GetImageFromArray(ct.array.transpose(2, 1, 0))

    def sitk_threshold():
        sitk.BinaryThreshold(img, lowerThreshold=-300, upperThreshold=32767, insideValue=1, outsideValue=0)

    rows = []
    for name in available_recipes():
        recipe = Recipe.parse(name)
        ours, ref = alternate(lambda: recipe(ct.array, ct.affine), sitk_threshold, reps, warmup=1)
        rows.append(
            {
                "recipe": recipe.spec,
                "masks/s": f"{1 / ours:.2f}",
                "Mvoxels/s": f"{ct.array.size / ours / 1e6:.0f}",
                "SimpleITK BinaryThreshold (s)": f"{ref:.3f}",
                "recipe / SimpleITK": f"{ours / ref:.2f}",
            }
        )
    # the body recipe as first written (scipy label + 3D fill + a fill per slice), for the record
    from scipy import ndimage

    def body_scipy():
        m = ct.array > -500
        lab, _ = ndimage.label(m, structure=np.ones((3, 3, 3), bool))
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = ndimage.binary_fill_holes(lab == np.argmax(sizes))
        return np.stack([ndimage.binary_fill_holes(m[:, :, k]) for k in range(m.shape[2])], axis=2)

    body = Recipe.parse("body")
    ours, ref = alternate(lambda: body(ct.array, ct.affine), body_scipy, max(2, reps // 2), warmup=0)
    rows.append(
        {
            "recipe": "body, first formulation (scipy only)",
            "masks/s": f"{1 / ref:.2f}",
            "Mvoxels/s": f"{ct.array.size / ref / 1e6:.0f}",
            "SimpleITK BinaryThreshold (s)": "",
            "recipe / SimpleITK": f"current body is {ref / ours:.1f}x faster, same mask",
        }
    )
    return "### GBM generation (512 x 512 x 200 int16 CT, 52 Mvoxels)\n\n" + md_table(rows)


# ----------------------------------------------------------------------------------------------
# memory (each measurement in a fresh process; VmHWM is its peak resident memory, and unlike
# ru_maxrss it is not inherited from the parent across exec)

_CHILD_PRELUDE = r"""
import sys, json
from pathlib import Path
sys.path.insert(0, {src!r})
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
import torch
torch.set_num_threads(1)
"""

_MEM_CHILD = _CHILD_PRELUDE + r"""
from globalmask.training import TrainConfig, train
from globalmask.model import NetConfig
root, run = Path(sys.argv[1]), Path(sys.argv[2])
base = hwm()
net = NetConfig(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=1)
cfg = TrainConfig(mode='ct+gbm', steps=3, val_every=3, net=net, max_patch_voxels=10**9)
res = train(root, run, cfg, progress=False, device='cpu')
print(json.dumps({{'base_mb': base, 'train_mb': hwm(), 'model': str(res.model_path)}}))
"""

_PRED_CHILD = _CHILD_PRELUDE + r"""
from globalmask.infer import Predictor
from globalmask.dataset import load_dataset
ds = load_dataset(sys.argv[2])
p = Predictor(sys.argv[1], device='cpu')
base = hwm()
p.predict_files([c.image for c in ds.cases.values()][:2], sys.argv[3], progress=False)
print(json.dumps({{'base_mb': base, 'predict_mb': hwm()}}))
"""


def bench_memory(sides=(64, 96, 128)) -> str:
    from globalmask.dataset import make_split, save_split
    from globalmask.phantom import make_phantom_dataset

    rows = []
    for side in sides:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            root = make_phantom_dataset(tmp / "ph", kind="headneck", cases=5, seed=0, shape=(side,) * 3)
            save_split(make_split(load_dataset(root).cases, seed=0, fractions=(3, 1, 1)), root / "splits.json")
            out = subprocess.run(
                [sys.executable, "-c", _MEM_CHILD.format(src=str(ROOT / "src")), str(root), str(tmp / "run")],
                capture_output=True,
                text=True,
                encoding="utf-8",
            )
            if out.returncode != 0:
                raise RuntimeError(f"memory benchmark (training, {side}^3) failed:\n{out.stderr[-2000:]}")
            t = json.loads(out.stdout.strip().splitlines()[-1])
            p = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _PRED_CHILD.format(src=str(ROOT / "src")),
                    t["model"],
                    str(root),
                    str(tmp / "pred"),
                ],
                capture_output=True,
                text=True,
                encoding="utf-8",
            )
            if p.returncode != 0:
                raise RuntimeError(f"memory benchmark (prediction, {side}^3) failed:\n{p.stderr[-2000:]}")
            pm = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "input (phantom CT, whole volume as the patch)": f"{side}^3",
                "process after imports (MB)": f"{t['base_mb']:.0f}",
                "training peak RSS (MB)": f"{t['train_mb']:.0f}",
                "prediction peak RSS (MB)": f"{pm['predict_mb']:.0f}",
            }
        )
    return "### Peak memory (VmHWM, one process per measurement, CPU, 1 thread, ct+gbm, batch 2)\n\n" + md_table(rows)


# ----------------------------------------------------------------------------------------------
# study wall time


NATIVE_PATCH = (96, 64, 96)  # the native-grid study's patch (benchmarks/openkbp_native/study.yaml)


def bench_native(device, reps: int) -> str:
    """Step time at the data's own grid (the training split's median spacing) with the native study's
    patch, against whole volumes there and the 6 mm study's whole volumes; sliding-window time of one
    validation case; time to plateau from the convergence runs (benchmarks/convergence/native-*.json)."""
    native = prepare_data(OPENKBP, DataConfig("bone"), progress=False)  # spacing None: median of the training split
    coarse = _prepared()
    whole = tuple(
        int(np.ceil(s / NET.divisor) * NET.divisor) for s in np.max([pc.shape for pc in native.cases.values()], axis=0)
    )
    rows = []
    for label, prepared, patch in (
        ("6 mm, whole volume (the 6 mm study)", coarse, PATCH),
        (f"native, patch {NATIVE_PATCH}", native, NATIVE_PATCH),
        (f"native, whole volume {whole}", native, whole),
    ):
        ids = list(prepared.split.train[:8])
        cfg = TrainConfig(mode="ct", steps=10_000, patch_size=patch, net=NET)
        spec = ModelSpec("ct", prepared.recipe, prepared.preprocess, prepared.dataset.labels, NET, patch)
        tr = Trainer(spec, cfg, [prepared.cases[i] for i in ids], prepared.preprocess.spacing, device)
        n = max(2, reps // (4 if "whole" in label and "native" in label else 1))
        tr.step()
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            tr.step()
        sync(device)
        step = (time.perf_counter() - t) / n
        val = prepared.cases[prepared.split.validation[0]]
        tr.net.eval()
        t = time.perf_counter()
        sliding_window_probs(
            tr.net, make_input(cfg.mode, val.ct, val.gbm), patch, 3, pad_values(cfg.mode), device, cfg.sw_overlap
        )
        infer = time.perf_counter() - t
        sp = prepared.preprocess.spacing
        rows.append(
            {
                "grid, patch": label,
                "spacing (mm)": " x ".join(f"{v:.2f}" for v in sp),
                "voxels per patch": int(np.prod(patch)),
                "training step (s)": f"{step:.2f}",
                "one validation case, sliding window (s)": f"{infer:.2f}",
            }
        )
    text = (
        f"### The data's own grid: training step and inference ({device.type}, {torch.get_num_threads()} threads,"
        " batch 2, ct input)\n\n"
        + md_table(rows)
    )
    runs = []
    for path in sorted((ROOT / "benchmarks" / "convergence").glob("native-*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        runs.append(
            {
                "run": f"{r['name']} ({r['mode']})",
                "plateau val Dice": f"{r['best_val_dice']:.3f}",
                "best step": r["best_step"],
                "steps run": r["steps"],
                "converged": "yes" if r["converged"] else "no",
                "minutes to stop": f"{r['train_seconds'] / 60:.1f}",
                "threads": r["machine"]["threads"],
            }
        )
    if runs:
        text += (
            "\n\nTime to plateau at the data's own grid"
            " (26 training cases, from `benchmarks/convergence/native-*.json`;"
            " wall time on 1 thread while a second run shared the machine):\n\n"
            + md_table(runs)
        )
    quiet = ROOT / "benchmarks" / "convergence" / "native_quiet_timing"
    if (quiet / "done.json").exists():  # the speed target: one model alone on the machine
        done = json.loads((quiet / "done.json").read_text(encoding="utf-8"))
        wall = next(
            (ln.split("):", 1)[1].strip() for ln in (quiet / "time_v.txt").read_text(encoding="utf-8").splitlines()
             if "Elapsed (wall clock)" in ln),
            "?",
        )
        text += (
            "\n\nOne full-size CT-only model alone on the 2 cores (`benchmarks/convergence/native_quiet_timing/`,"
            " the command in `benchmarks/convergence.md`): plateau validation Dice"
            f" {done['best_val_dice']:.3f} at step {done['best_step']}, stopped at {done['steps']}"
            f" ({'converged' if done['converged'] else 'NOT converged'}); wall time {wall} (h:mm:ss or m:ss),"
            " target <= 45 min."
        )
    return text


def bench_study(study_dir: Path | None) -> str:
    text = "### Study wall time\n\n"
    if study_dir is not None and (study_dir / "results.json").exists():
        res = json.loads((study_dir / "results.json").read_text(encoding="utf-8"))
        import pandas as pd

        runs = pd.DataFrame(res["runs"])
        by = (
            runs.groupby("size_label")
            .agg(
                runs=("run_id", "count"),
                steps=("steps", "mean"),
                train_s=("train_seconds", "mean"),
                total_s=("total_seconds", "mean"),
            )
            .reset_index()
        )
        rows = [
            {
                "training cases": r.size_label,
                "runs": r.runs,
                "mean steps": f"{r.steps:.0f}",
                "mean train s/run": f"{r.train_s:.0f}",
                "mean total s/run (incl. test evaluation; a resumed run: its last sitting)": f"{r.total_s:.0f}",
                "s/step": f"{r.train_s / r.steps:.2f}",
            }
            for r in by.itertuples()
        ]
        text += (
            f"From `{study_dir.name}/results.json` (runs executed with --workers 2, 1 thread each):\n\n"
            + md_table(rows)
        )
        # train_seconds spans every sitting of a resumed run; total_seconds only its last one
        text += f"\n\nSum of training times: {runs['train_seconds'].sum() / 3600:.2f} h of worker time.\n\n"
    text += _workers_scaling()
    return text


def _workers_scaling() -> str:
    """A small phantom study run with --workers 1 and --workers 2 (same runs, fresh folders)."""
    from globalmask.dataset import make_split, save_split
    from globalmask.phantom import make_phantom_dataset
    from globalmask.study import StudyConfig, run_study

    cfg = StudyConfig(
        modes=["ct", "gbm"],
        train_sizes=[1, 2],
        draws=2,
        steps=150,
        val_every=75,
        net={"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1},
        shifts=[],
        ablation_recipes=[],
        overlays=0,
        device="cpu",
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_phantom_dataset(Path(tmp) / "ph", kind="headneck", cases=8, seed=0, shape=(48, 48, 48))
        save_split(make_split(load_dataset(root).cases, seed=0, fractions=(4, 2, 2)), root / "splits.json")
        times = {}
        for workers in (1, 2):
            t = time.perf_counter()
            run_study(root, Path(tmp) / f"w{workers}", cfg, workers=workers, progress=False, echo=lambda *_: None)
            times[workers] = time.perf_counter() - t
        rows.append(
            {
                "setting": "9 runs x 150 steps, 48^3 phantom",
                "--workers 1 (s)": f"{times[1]:.0f}",
                "--workers 2 (s)": f"{times[2]:.0f}",
                "speed-up": f"{times[1] / times[2]:.2f}",
            }
        )
    return md_table(rows)


# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="train,predict,gbm,memory,study,native")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument(
        "--study",
        type=Path,
        default=ROOT / "benchmarks" / "openkbp",
        help="a finished study (folder with results.json) to read run times from",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument(
        "--grids",
        default="6,3",
        help="predict section: grid spacings (mm) to time, comma-separated; the first gets the stage table",
    )
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="predict section: a trained model (on the first grid) to time;"
        " default: train the bench network for --train-steps",
    )
    ap.add_argument(
        "--train-steps",
        type=int,
        default=100,
        help="predict section: steps of the quick training that stands in for a trained model",
    )
    ap.add_argument(
        "--merge", action="store_true", help="replace only the sections run in the existing --out file, keep the rest"
    )
    args = ap.parse_args()
    if not (OPENKBP / "dataset.json").exists():
        sys.exit(f"benchmarks need the OpenKBP data at {OPENKBP}")
    device = resolve_device(args.device)
    sections = args.sections.split(",")
    parts = [
        f"# globalmask benchmarks\n\nMachine: {machine(device)}.  \n"
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/bench.py', *sys.argv[1:]])}`  \n"
        f"Date: {time.strftime('%Y-%m-%d')}\n"
    ]
    t0 = time.perf_counter()
    done: dict[str, str] = {}
    for name in sections:
        print(f"[bench] {name} ...", flush=True)
        load = os.getloadavg()[0]
        if name == "train":
            parts.append(bench_train(device, args.reps))
        elif name == "predict":
            parts.append(
                bench_predict(
                    device,
                    args.reps,
                    tuple((float(g),) * 3 for g in args.grids.split(",")),
                    args.checkpoint,
                    args.train_steps,
                )
            )
        elif name == "gbm":
            parts.append(bench_gbm(max(3, args.reps // 2)))
        elif name == "memory":
            parts.append(bench_memory())
        elif name == "study":
            parts.append(bench_study(args.study))
        elif name == "native":
            parts.append(bench_native(device, args.reps))
        note = (
            f"_Load average (1 min) {load:.1f} before and {os.getloadavg()[0]:.1f} after this section,"
            f" on {os.cpu_count()} cores"
        )
        note += (
            ": a loaded machine, so compare ratios, not seconds._"
            if max(load, os.getloadavg()[0]) > 0.5 * (os.cpu_count() or 1)
            else "._"
        )
        parts[-1] = done[name] = f"<!-- section:{name} -->\n{parts[-1]}\n\n{note}\n<!-- /section:{name} -->"
        print(parts[-1], flush=True)
    if args.merge and args.out.exists():
        text = args.out.read_text(encoding="utf-8")
        for name, part in done.items():
            text = merge_section(
                text,
                name,
                f"{part[: -len(f'<!-- /section:{name} -->')]}_Rerun alone on {time.strftime('%Y-%m-%d')}: "
                f"`{' '.join(['.venv/bin/python', 'benchmarks/bench.py', *sys.argv[1:]])}`_\n<!-- /section:{name} -->",
            )
        write_text(args.out, text)
    else:
        parts.append(f"\n_Total benchmark time {time.perf_counter() - t0:.0f} s._\n")
        write_text(args.out, "\n\n".join(parts))
    print(f"wrote {args.out}")


def merge_section(text: str, name: str, part: str) -> str:
    """``text`` with the section between ``<!-- section:name -->`` markers replaced by ``part`` (appended if absent)."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    if start in text and end in text:
        return text[: text.index(start)] + part + text[text.index(end) + len(end) :]
    return text.rstrip("\n") + "\n\n" + part + "\n"


if __name__ == "__main__":
    main()
