"""Mirroring at test time, measured on the validation split (issue 24's candidate list).

A head is close to mirror-symmetric left to right, so the one mirror that shows the network a
plausible head is the left-right flip, with the lateral structures' labels swapped back
(``--swap 3,4``: parotid right/left on OpenKBP). The network's class probabilities on the scan and
on its mirror are averaged; Dice is on the network grid, as the plateau rule scores it.

    .venv/bin/python benchmarks/convergence_tta.py ../shared/data/Dataset501_OpenKBPHeadNeck \
        runs/convergence/native-p96-ct/model.pt --swap 3,4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from globalmask.checkpoint import load_model
from globalmask.dataset import load_dataset, resolve_split
from globalmask.infer import pad_values, sliding_window_probs
from globalmask.metrics import dice
from globalmask.model import make_input
from globalmask.training import DataConfig, prepare_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("checkpoint")
    p.add_argument("--swap", default="", help="label values to swap under the left-right mirror, e.g. 3,4")
    args = p.parse_args()
    spec, net = load_model(args.checkpoint)
    net.eval()
    ds = load_dataset(args.dataset)
    split, _ = resolve_split(ds)
    data = DataConfig(spec.recipe, spec.preprocess.spacing, spec.preprocess.window)
    prepared = prepare_data(ds, data, list(split.validation), progress=False)
    swap = [int(v) for v in args.swap.split(",")] if args.swap else []
    order = list(range(len(ds.labels)))
    if swap:
        order[swap[0]], order[swap[1]] = order[swap[1]], order[swap[0]]
    scores: dict[str, list[list[float]]] = {"plain": [], "mirror L-R": []}
    seconds = {"plain": 0.0, "mirror L-R": 0.0}
    device = torch.device("cpu")
    for cid in split.validation:
        pc = prepared.cases[cid]
        x = make_input(spec.mode, pc.ct, pc.gbm)
        t = time.perf_counter()
        probs = sliding_window_probs(net, x, spec.patch_size, 3, pad_values(spec.mode), device, spec.sw_overlap)
        seconds["plain"] += time.perf_counter() - t
        t = time.perf_counter()
        flipped = sliding_window_probs(
            net, np.ascontiguousarray(x[:, ::-1]), spec.patch_size, 3, pad_values(spec.mode), device, spec.sw_overlap
        )
        mirrored = torch.flip(flipped, dims=[1])[order]  # back to the scan's side, lateral labels swapped back
        seconds["mirror L-R"] += time.perf_counter() - t  # the extra pass only
        for name, p_ in (("plain", probs), ("mirror L-R", (probs + mirrored) / 2)):
            pred = p_.argmax(0).numpy()
            scores[name].append(
                [dice(pred == v, pc.label == v) for n, v in ds.labels.items() if v != 0 and (pc.label == v).any()]
            )
    for name, rows in scores.items():
        print(f"{name:>11}: validation Dice {np.mean([np.mean(r) for r in rows]):.4f}; per structure "
              + " ".join(f"{np.mean([r[k] for r in rows]):.3f}" for k in range(len(rows[0])))
              + f"; extra seconds {seconds[name]:.0f}")


if __name__ == "__main__":
    main()
