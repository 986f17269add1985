"""GPU check and benchmark: tuning an L2 on CUDA (bf16 autocast vs fp32) against the CPU, in one run.

Run on a machine with a CUDA device (the project's `device` tool), over an ELPV subset given as a
class-folder tree (``defect/``, ``ok/``): full fine-tuning and LoRA of EfficientNet-Lite0 at 224 px.
Arms, all on the same data, split and seed: ``cuda-bf16`` (``device=auto`` picks CUDA,
``mixed_precision`` on), ``cuda-fp32`` (the default), ``cpu`` (all the machine's cores) -- seconds per epoch
(the first epoch, with CUDA warm-up, is reported apart), validation AUROC, and the speed-up ratios
against the CPU arm; ``lora-lpft-cuda-bf16`` (LoRA with ``head_init: probe``); ``prior-cuda`` /
``prior-cpu``: probe + anomaly prior (``prior: gaussian``) from an empty feature cache, whole tune wall
seconds (frozen features and the prior's pool pass run on the device).
Optional ``sft`` arms: LoRA SFT tokens/s of a randomly initialised causal LM
with SmolLM2-135M's shape (its weights are not needed to time it) on CUDA vs the CPU.

    python bench/gpu.py --images DIR [--epochs 3] [--out bench/results/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from modelfab.core.machine import describe_machine


def _auroc(metrics: dict[str, Any]) -> float | None:
    """The validation AUROC wherever the registry keeps it (flat or under ``val``)."""
    for key in ("val_auroc", "auroc"):
        if isinstance(metrics.get(key), float):
            return round(float(metrics[key]), 4)
    val = metrics.get("val")
    return _auroc(val) if isinstance(val, dict) else None


def tune_arm(
    store: Any, name: str, method: str, device: str, amp: bool, epochs: int, head_init: str = "random"
) -> dict[str, Any]:
    from modelfab.store.models import model_card
    from modelfab.tune import TuneConfig
    from modelfab.tune.api import tune

    cfg = TuneConfig(method=method, epochs=epochs, patience=epochs + 1, batch_size=32, device=device,
                     mixed_precision=amp, seed=0, augment="light", head_init=head_init)
    start = time.perf_counter()
    out = tune(store, base="lite0", data="elpv-subset", name=name, cfg=cfg)
    wall = time.perf_counter() - start
    card = model_card(store, out.model.id)
    training = card["training"]
    per_epoch = training["seconds"] / max(1, training["epochs"])
    return {"method": method, "head_init": head_init, "device": training["device"], "bf16": amp and device != "cpu",
            "epochs": training["epochs"], "train_s": round(training["seconds"], 2), "s_per_epoch": round(per_epoch, 2),
            "wall_s": round(wall, 1), "val_auroc": _auroc(out.model.metrics),
            "last_train_loss": training["history"][-1]["train_loss"]}


def prior_arm(store: Any, name: str, device: str) -> dict[str, Any]:
    """Probe + anomaly prior on ``device``, from an empty feature cache: the probe's frozen features and
    the prior's pass over the unlabeled pool both run there."""
    import shutil

    from modelfab.tune import TuneConfig
    from modelfab.tune.api import tune

    shutil.rmtree(store.settings.home / "cache" / "features", ignore_errors=True)
    start = time.perf_counter()
    out = tune(store, base="lite0", data="elpv-subset-defect", name=name,
               cfg=TuneConfig(prior="gaussian", device=device, seed=0))
    wall = time.perf_counter() - start
    prior = out.trained.card["scenario"]["prior"]
    return {"method": "probe+prior", "device": device, "wall_s": round(wall, 1), "val_auroc": _auroc(out.val_metrics),
            "val_auroc_prior_alone": round(float(prior["val_auroc_prior_alone"]), 4),
            "pool_images": prior["pool_images"], "trim": prior["trim"], "weight": prior["weight"]}


def sft_arm(device: str, steps: int, seq: int, batch: int) -> dict[str, Any]:
    """LoRA SFT steps/s and tokens/s of a SmolLM2-135M-shaped model (random weights) on ``device``."""
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(device)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)  # (B, T)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    times = []
    for step in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    return {"device": device, "params": sum(p.numel() for p in model.parameters()), "batch": batch, "seq": seq,
            "s_per_step": round(mean, 4), "tokens_per_s": round(batch * seq / mean, 1), "loss": float(loss.detach())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpu-epochs", type=int, default=1)
    ap.add_argument("--arms", default="cuda-bf16,cuda-fp32,lora-cuda-bf16,lora-lpft-cuda-bf16,cpu,prior-cuda,prior-cpu,"
                                      "sft-cuda,sft-cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = ap.parse_args()
    arms = set(args.arms.split(","))
    os.environ.setdefault("MODELFAB_HOME", tempfile.mkdtemp(prefix="modelfab-gpu-"))
    from modelfab.data.importers import import_image_folder
    from modelfab.data.tasks import TaskView
    from modelfab.store.store import open_store
    from modelfab.zoo.registry import register_foundation

    store = open_store()
    imported = import_image_folder(store, args.images, "elpv-subset")
    defect = TaskView(type="binary", classes=["ok", "defect"], positive="defect")
    import_image_folder(store, args.images, "elpv-subset-defect", tasks={"defect": defect.model_dump()})
    register_foundation(store, "efficientnet-lite0", name="lite0")
    result: dict[str, Any] = {
        "bench": "gpu", "machine": describe_machine(), "images": imported.items,
        "split_hash": imported.version.split_info.get("hash"), "seeds": [0], "cells": {},
    }
    cells = result["cells"]
    plan = [("cuda-bf16", "full", "cuda", True, args.epochs), ("cuda-fp32", "full", "cuda", False, args.epochs),
            ("lora-cuda-bf16", "lora", "cuda", True, args.epochs),
            ("lora-lpft-cuda-bf16", "lora", "cuda", True, args.epochs), ("cpu", "full", "cpu", False, args.cpu_epochs)]
    for arm, method, device, amp, epochs in plan:
        if arm in arms and (device == "cpu" or torch.cuda.is_available()):
            head_init = "probe" if "lpft" in arm else "random"
            cells[arm] = tune_arm(store, arm, method, device, amp, epochs, head_init)
            print(arm, json.dumps(cells[arm]), flush=True)
    for arm, device in (("prior-cuda", "cuda"), ("prior-cpu", "cpu")):
        if arm in arms and (device == "cpu" or torch.cuda.is_available()):
            cells[arm] = prior_arm(store, arm, device)
            print(arm, json.dumps(cells[arm]), flush=True)
    if "prior-cuda" in cells and "prior-cpu" in cells:
        cells["prior-cuda"]["speedup_vs_cpu"] = round(cells["prior-cpu"]["wall_s"] / cells["prior-cuda"]["wall_s"], 1)
    for arm, device in (("sft-cuda", "cuda"), ("sft-cpu", "cpu")):
        if arm in arms and (device == "cpu" or torch.cuda.is_available()):
            cells[arm] = sft_arm(device, steps=10 if device == "cuda" else 3, seq=256, batch=8)
            print(arm, json.dumps(cells[arm]), flush=True)
    if "cpu" in cells:
        for arm in ("cuda-bf16", "cuda-fp32"):
            if arm in cells:
                cells[arm]["speedup_vs_cpu"] = round(cells["cpu"]["s_per_epoch"] / cells[arm]["s_per_epoch"], 1)
    if "sft-cpu" in cells and "sft-cuda" in cells:
        ratio = cells["sft-cuda"]["tokens_per_s"] / cells["sft-cpu"]["tokens_per_s"]
        cells["sft-cuda"]["speedup_vs_cpu"] = round(ratio, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"GPU check on {result['machine'].get('gpu', 'no GPU')}")
    for col in ("arm", "device", "s/epoch or s/step", "tokens/s", "val AUROC", "x CPU"):
        table.add_column(col)
    for arm, c in cells.items():
        speed = c.get("s_per_epoch", c.get("s_per_step", f"{c.get('wall_s')} (tune wall)"))
        table.add_row(arm, str(c.get("device")), str(speed),
                      str(c.get("tokens_per_s", "")), str(c.get("val_auroc", "")), str(c.get("speedup_vs_cpu", "")))
    Console().print(table)


if __name__ == "__main__":
    main()
