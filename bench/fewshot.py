"""Few-shot benchmark on ELPV (elpv-defect, official split): test AUROC, AP and recall at
precision 0.9 (threshold from validation) versus labels per class, mean and 95% interval over seeds.

Arms
  probe     L2 from the L0 (EfficientNet-Lite0): logistic regression on cached frozen features
  lora      L2 from the L0 with PEFT LoRA rank 4 (1x1 convs), at --train-size pixels
  lora-lr3e-4  the lora arm at full fine-tuning's learning rate (3e-4 instead of 1e-3)
  full      L2 from the L0, full fine-tuning, at --train-size pixels
  lora-lpft, full-lpft  the same with `head_init: probe` (the head starts from the frozen-feature probe)
  l1-probe  L2 from an L1 (--l1 MODEL, e.g. from `modelfab adapt`), probe
  probe-prior  the probe fused with the anomaly prior (`--prior gaussian`): a per-location Gaussian of
            Lite0's patch features fitted on the unlabeled train pool (labels unused), weighed on val
  scratch   a small CNN trained from scratch on the same labels (the "small industry model")
  auto      `tune --auto`: the strategy pool ranks recipes (it has seen the other arms' runs)

Resumable: every finished (arm, size, seed) cell is saved to bench/results/fewshot.json at once.
Usage: python bench/fewshot.py [--arms probe,scratch,auto] [--sizes 10,20,30,40] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultFile, fewshot_table, mean_ci, plot_curves

from modelfab.core.config import Settings
from modelfab.data import import_elpv
from modelfab.evaluate import choose_threshold_for_precision, choose_threshold_for_recall, compute_metrics
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, load_scenario, tune
from modelfab.tune.auto import auto_tune
from modelfab.tune.data import TaskData, item_inputs, load_task_data
from modelfab.zoo.registry import register_foundation

TASK = "elpv-defect"
OUT = Path(__file__).parent / "results" / "fewshot.json"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home"))


def bench_store() -> Store:
    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    import_elpv(st, "elpv")
    register_foundation(st, "efficientnet-lite0", name="lite0")
    return st


def test_metrics(y_test: np.ndarray, p_test: np.ndarray, y_val: np.ndarray, p_val: np.ndarray) -> dict[str, float]:
    """AUROC, AP and recall at precision 0.9 with the threshold chosen on validation."""
    thr = choose_threshold_for_precision(y_val, p_val[:, 1], 0.9, strict=False)
    m = compute_metrics(y_test, p_test, ["normal", "defective"], positive=1, precision_thresholds={0.9: thr})
    return {
        "auroc": float(m.auroc or 0.0),
        "ap": float(m.ap or 0.0),
        "recall@p0.9": float(m.recall_at_precision[0].achieved.recall),
    }


def eval_l2(st: Store, model_id: str, data: TaskData) -> dict[str, float]:
    sc = load_scenario(st, model_id)
    p_val = sc.predict_rows(st, data.split("val").rows, "image").numpy()
    p_test = sc.predict_rows(st, data.split("test").rows, "image").numpy()
    return test_metrics(data.split("test").y.numpy(), p_test, data.split("val").y.numpy(), p_val)


class SmallCNN(nn.Module):
    """Four conv blocks (16-32-64-128 channels), global average pooling, linear head: 0.1M params."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for cout in (16, 32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128, 2)

    def forward(self, x: Tensor) -> Tensor:  # (N, 1, S, S) -> (N, 2)
        return self.head(self.features(x).mean(dim=(2, 3)))


_GRAY: dict[tuple[str, int], Tensor] = {}


def _gray(st: Store, rows: list[Any], size: int) -> Tensor:
    """(N, 1, S, S) normalised grayscale images, decoded once per process."""
    missing = [r for r in rows if (r.content_hash, size) not in _GRAY]
    if missing:
        for r, x in zip(missing, _decode(st, missing, size), strict=True):
            _GRAY[(r.content_hash, size)] = x
    return torch.stack([_GRAY[(r.content_hash, size)] for r in rows])


def _decode(st: Store, rows: list[Any], size: int) -> Tensor:
    imgs = item_inputs(st, rows, "image")
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(i[:, :, 0])).float() for i in imgs]).unsqueeze(1) / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 0.5) / 0.25  # (N, 1, S, S)


def scratch_cell(st: Store, data: TaskData, seed: int, size: int = 128, epochs: int = 40) -> dict[str, float]:
    """Train SmallCNN on the few-shot train items; early stopping on validation loss."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = _gray(st, data.split("train").rows, size), data.split("train").y
    xva, yva = _gray(st, data.split("val").rows, size), data.split("val").y
    xte, yte = _gray(st, data.split("test").rows, size), data.split("test").y
    net = SmallCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    counts = torch.bincount(ytr, minlength=2).float()
    weights = counts.sum() / (2 * counts)
    best, best_state, bad = float("inf"), None, 0
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(ytr), generator=gen)
        for start in range(0, len(ytr), 16):
            idx = order[start : start + 16]
            xb = xtr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.cross_entropy(net(xb), ytr[idx], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val = F.cross_entropy(net(xva), yva, weight=weights).item()
        if val < best - 1e-4:
            best, best_state, bad = val, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= 10:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        p_val, p_test = torch.softmax(net(xva), 1).numpy(), torch.softmax(net(xte), 1).numpy()
    _ = choose_threshold_for_recall  # same threshold policy module as the L2s
    return test_metrics(yte.numpy(), p_test, yva.numpy(), p_val)


def run_cell(st: Store, arm: str, shots: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = load_task_data(st, "elpv", TASK, shots=shots, seed=seed)
    t0 = time.perf_counter()
    name = f"bench-{arm}-{shots}-{seed}"
    if arm == "scratch":
        out = scratch_cell(st, data, seed)
    elif arm == "auto":
        res = auto_tune(
            st,
            base="lite0",
            data="elpv",
            name=name,
            budget_s=args.auto_budget,
            top=2,
            optuna_trials=2,
            cfg=TuneConfig(labels=TASK, shots=shots, seed=seed),
        )
        out = {**eval_l2(st, res.model.id, data), "recipe": res.best.recipe or ""}
    else:
        base = args.l1 if arm == "l1-probe" else "lite0"
        method = {"probe": "probe", "l1-probe": "probe", "probe-prior": "probe", "lora": "lora",
                  "lora-lr3e-4": "lora", "full": "full", "lora-lpft": "lora", "full-lpft": "full"}[arm]
        cfg = TuneConfig(
            labels=TASK,
            shots=shots,
            seed=seed,
            method=method,
            image_size=None if method == "probe" else args.train_size,
            epochs=8,
            val_max=96,
            lr=1e-3 if arm in ("lora", "lora-lpft") else 3e-4,
            head_init="probe" if arm.endswith("-lpft") else "random",
            prior="gaussian" if arm == "probe-prior" else "none",
        )
        res = tune(st, base=base, data="elpv", name=name, cfg=cfg)
        out = eval_l2(st, res.model.id, data)
        if method != "probe":
            out["epoch_seconds"] = res.outcome.seconds / max(res.outcome.epochs, 1)
        if arm == "probe-prior":
            prior = res.trained.card["scenario"]["prior"]
            out.update({"trim": prior["trim"], "weight": prior["weight"], "artifact_bytes": res.artifact_bytes,
                        "val_auroc_prior_alone": prior["val_auroc_prior_alone"],
                        "tune_seconds": time.perf_counter() - t0})
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="probe,scratch,auto")
    ap.add_argument("--sizes", default="10,20,30,40")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--train-size", type=int, default=160, help="input side for lora/full arms")
    ap.add_argument("--auto-budget", type=float, default=120.0)
    ap.add_argument("--l1", default=None, help="an L1 model for the l1-probe arm")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--isolate", action="store_true", help="run each cell in a subprocess (records peak RSS)")
    ap.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # internal: run one ARM/SHOTS/SEED cell
    args = ap.parse_args()
    arms = args.arms.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = list(range(args.seeds))
    console = Console()
    st = bench_store()
    dv = st.get_dataset_version("elpv")
    results = ResultFile(
        args.out,
        {"benchmark": "fewshot", "task": TASK, "split_hash": dv.split_info["hash"], "dataset": f"elpv@{dv.version}"},
    )
    for arm in arms:
        if arm == "l1-probe" and not args.l1:
            console.print("[yellow]l1-probe skipped: no --l1 model given")
            continue
        for shots in sizes:
            for seed in seeds:
                key = f"{arm}/{shots}/{seed}"
                if args.cell and key != args.cell:
                    continue
                if results.done(key):
                    continue
                if args.isolate and not args.cell:
                    cmd = [sys.executable, __file__, *sys.argv[1:], "--cell", key]
                    subprocess.run(cmd, check=True)
                    results = ResultFile(args.out, results.header)
                    cell = results.data["cells"][key]
                else:
                    cell = run_cell(st, arm, shots, seed, args)
                    cell["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    results.put(key, {"arm": arm, "shots": shots, "seed": seed, **cell})
                console.print(f"{key}: auroc {cell['auroc']:.3f} ap {cell['ap']:.3f} ({cell['seconds']:.0f} s)")
    if not args.cell:
        report(results.data, console, args.out.with_suffix(".png"))
    return 0


ARM_ORDER = ["probe", "l1-probe", "probe-prior", "lora", "lora-lr3e-4", "lora-lpft", "full", "full-lpft", "auto",
             "scratch"]


def report(data: dict[str, Any], console: Console, png: Path) -> None:
    cells = list(data["cells"].values())
    arms = sorted({c["arm"] for c in cells}, key=lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else 99)
    title = f"few-shot {data['task']} (test split, split {data['split_hash']}): mean ± 95% CI over seeds"
    table, curves = fewshot_table(cells, arms, title)
    console.print(table)
    cost = Table(title="cost per cell (this machine): seconds per epoch, wall seconds, peak RSS")
    for col in ("arm", "cells", "s/epoch", "wall s", "peak RSS MB"):
        cost.add_column(col)
    for arm in arms:
        mine = [c for c in cells if c["arm"] == arm]
        per_epoch = [c["epoch_seconds"] for c in mine if "epoch_seconds" in c]
        rss = [c["peak_rss_mb"] for c in mine if "peak_rss_mb" in c]
        cost.add_row(
            arm,
            str(len(mine)),
            f"{mean_ci(per_epoch)[0]:.1f}" if per_epoch else "-",
            f"{mean_ci([c['seconds'] for c in mine])[0]:.0f}",
            f"{max(rss):.0f}" if rss else "-",
        )
    console.print(cost)
    plot_curves(curves, png, f"ELPV {data['task']}: few-shot L2 vs baselines", "labeled train images per class")
    console.print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
