"""L0 pretraining ablations on CPU, on the Python standard library's sources (offline).

Experiments (equal tokens for every arm of one experiment; same seed, data order and tokenizer):
  depth   DSSN + TinyInit vs Pre-LN + default init, deep and narrow: loss, spikes, grad-norm trace
  moe     Switch aux loss vs EP-group loss (2 gloo ranks, torchrun) vs aux-loss-free vs MoGE:
          loss, max/mean expert load, imbalance score over 2 notional devices
  attn    MLA vs MHA (and GQA): KV-cache bytes per token (bf16) and loss
  mtp     MTP (D=1, lambda=0.3) on vs off: loss of the main head

"loss" is the main-head cross-entropy on held-out stdlib files (never trained on).  Each arm has a
stated wall-clock budget; the JSON records whether it was kept.  Finished arms are kept in the
JSON and skipped on the next run (resumable per arm); an interrupted arm resumes from its last
checkpoint in the work folder.

Usage: python bench/pretrain.py [--quick] [--only depth,moe] [--force] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table

from modelfab.core.machine import describe_machine
from modelfab.pretrain.config import parse_run_config
from modelfab.pretrain.data import TokenStream, build_shards, corpus_sha256
from modelfab.pretrain.export import load_pretrained
from modelfab.pretrain.logs import read_jsonl
from modelfab.pretrain.run import run_pretraining
from modelfab.pretrain.tokenizer import load_tokenizer, train_bpe

SEED = 0
OUT = Path(__file__).parent / "results" / "pretrain.json"
PLOT = Path(__file__).parent / "results" / "pretrain_depth_gradnorm.png"
console = Console(width=140)


@dataclass
class Arm:
    experiment: str
    name: str
    model: dict[str, Any]
    world: int = 1
    train: dict[str, Any] = field(default_factory=dict)


def sizes(quick: bool) -> dict[str, Any]:
    """Model and budget sizes: --quick fits a shared 2-core box (about 1-2 minutes per arm)."""
    if quick:
        return {
            "train_bytes": 1_500_000, "eval_bytes": 200_000, "vocab": 1024, "seq_len": 64, "micro_batch": 8,
            "depth_layers": 24, "depth_d": 48, "depth_steps": 300, "steps": 300, "d": 64, "layers": 4,
            "eval_windows": 128, "budget_s": 180,
        }  # fmt: skip
    return {
        "train_bytes": 4_000_000, "eval_bytes": 300_000, "vocab": 2048, "seq_len": 128, "micro_batch": 8,
        "depth_layers": 48, "depth_d": 64, "depth_steps": 300, "steps": 400, "d": 96, "layers": 6,
        "eval_windows": 256, "budget_s": 300,
    }  # fmt: skip


def arms(s: dict[str, Any]) -> list[Arm]:
    deep = {"d_model": s["depth_d"], "n_layers": s["depth_layers"], "n_heads": 4}
    base = {"d_model": s["d"], "n_layers": s["layers"], "n_heads": 4}
    moe = {"n_experts": 8, "top_k": 2, "n_shared": 1, "expert_hidden": s["d"], "stat_devices": 2}
    deep_train = {"max_steps": s["depth_steps"], "lr": 3e-3}
    deep_hot = {"max_steps": s["depth_steps"], "lr": 1e-2}
    free = {**moe, "router": "aux_free", "balance": "none"}
    mla = {"attention": "mla", "kv_latent": 32, "q_latent": 48, "rope_dim": 8}
    return [
        Arm("depth", "pre-LN + default init", {**deep, "norm": "pre", "init": "default"}, train=deep_train),
        Arm("depth", "DSSN + TinyInit", {**deep, "norm": "dssn", "init": "tiny"}, train=deep_train),
        Arm("depth", "DSSN + default init", {**deep, "norm": "dssn", "init": "default"}, train=deep_train),
        Arm("depth", "pre-LN + TinyInit", {**deep, "norm": "pre", "init": "tiny"}, train=deep_train),
        Arm("depth-lr1e-2", "pre-LN + default init", {**deep, "norm": "pre", "init": "default"}, train=deep_hot),
        Arm("depth-lr1e-2", "DSSN + TinyInit", {**deep, "norm": "dssn", "init": "tiny"}, train=deep_hot),
        Arm("moe", "switch aux loss", {**base, "ffn": "moe", "moe": {**moe, "balance": "switch"}}),
        Arm("moe", "EP-group loss (2 ranks)", {**base, "ffn": "moe", "moe": {**moe, "balance": "ep_group"}}, world=2),
        Arm("moe", "aux-loss-free bias", {**base, "ffn": "moe", "moe": free}),
        Arm("moe", "MoGE (2 groups) + switch", {**base, "ffn": "moe", "moe": {**moe, "router": "moge", "n_groups": 2}}),
        Arm("attn", "MHA", {**base, "attention": "mha"}),
        Arm("attn", "GQA (2 KV heads)", {**base, "attention": "gqa", "n_kv_heads": 2}),
        Arm("attn", "MLA (d_c=32, d_R=8)", {**base, **mla}),
        Arm("mtp", "MTP off", {**base}),
        Arm("mtp", "MTP D=1 lambda=0.3", {**base, "mtp_depth": 1, "mtp_lambda": 0.3}),
    ]  # fmt: skip


def prepare(work: Path, s: dict[str, Any]) -> dict[str, Any]:
    """Train/eval text from sorted stdlib *.py files, a BPE trained on the train part, eval shards."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))
    train_txt, eval_txt = work / "corpus" / "train.txt", work / "corpus" / "eval.txt"
    if not train_txt.exists():
        train_txt.parent.mkdir(parents=True, exist_ok=True)
        chunks: list[str] = []
        used = 0
        for f in files:  # the first files until train_bytes for training, the following for eval
            chunks.append(f.read_text(errors="replace"))
            used += len(chunks[-1])
            if used >= s["train_bytes"]:
                break
        rest = "".join(f.read_text(errors="replace") for f in files[len(chunks) :])
        eval_txt.write_text(rest[: s["eval_bytes"]])
        train_txt.write_text("".join(chunks))
    tok_dir = work / "tokenizer"
    tok = load_tokenizer(tok_dir) if (tok_dir / "tokenizer.json").exists() else None
    if tok is None:
        tok = train_bpe(iter([train_txt.read_text()]), s["vocab"], tok_dir)
    eval_hash = corpus_sha256([eval_txt])
    eval_shards = build_shards(iter([eval_txt.read_text()]), tok, work / "eval_shards", eval_hash)
    return {
        "train": train_txt,
        "tokenizer": tok_dir,
        "eval_shards": eval_shards,
        "corpus_sha256": corpus_sha256([train_txt]),
        "eval_sha256": eval_hash,
        "tokenizer_sha256": tok.sha256,
        "train_tokens": len(tok.encode(train_txt.read_text())),
    }


@torch.no_grad()
def eval_ce(model_dir: Path, data: dict[str, Any], s: dict[str, Any]) -> float:
    model, _ = load_pretrained(model_dir)
    model.eval()
    stream = TokenStream(data["eval_shards"], s["seq_len"], seed=SEED)
    n = min(s["eval_windows"], stream.n_windows)
    total = 0.0
    for start in range(0, n, 16):
        x, y = stream.batch(start, min(16, n - start))
        ce = model(x, y).ce
        if ce is None:
            raise RuntimeError("model returned no loss")
        total += float(ce) * x.shape[0]
    return total / n


def run_arm(arm: Arm, s: dict[str, Any], data: dict[str, Any], work: Path, seed: int) -> dict[str, Any]:
    slug = f"{arm.experiment}-{arm.name}-seed{seed}".lower().replace(" ", "_").replace("/", "_")
    slug = "".join(c for c in slug if c.isalnum() or c in "-_.=+")
    out_dir = work / "runs" / slug
    train = {
        "seq_len": s["seq_len"], "micro_batch": s["micro_batch"] // arm.world, "max_steps": s["steps"],
        "warmup_steps": 20, "lr": 3e-3, "min_lr": 3e-4, "ckpt_every": 50, "seed": seed, "plots": False,
        "device": "cpu", **arm.train,
    }  # fmt: skip
    raw = {
        "name": slug,
        "out_dir": str(out_dir),
        "data": {"corpus": str(data["train"]), "tokenizer": {"path": str(data["tokenizer"])}},
        "model": arm.model,
        "train": train,
    }
    t0 = time.perf_counter()
    if arm.world == 1:
        run_pretraining(parse_run_config(raw))
    else:
        cfg_path = work / f"{slug}.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", f"--nproc_per_node={arm.world}", "-m", "modelfab.pretrain"]
        threads = max(1, torch.get_num_threads() // arm.world)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([*cmd, "--config", str(cfg_path)], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    recs = read_jsonl(out_dir / "metrics.jsonl")
    tail = recs[-20:]
    model, _ = load_pretrained(out_dir / "model")
    result: dict[str, Any] = {
        "experiment": arm.experiment,
        "arm": arm.name,
        "seed": seed,
        "world": arm.world,
        "model": arm.model,
        "train": train,
        "steps": recs[-1]["step"],
        "tokens": recs[-1]["tokens"],
        "wall_s": round(wall, 1),
        "within_budget": wall <= s["budget_s"],
        "tokens_per_s": sum(r["tokens_per_s"] for r in tail) / len(tail),
        "train_ce_last20": sum(r["ce"] for r in tail) / len(tail),
        "eval_ce": eval_ce(out_dir / "model", data, s),
        "spikes": recs[-1]["spikes"],
        "max_grad_norm": max(r["grad_norm"] for r in recs),
        "grad_norm_trace": [round(r["grad_norm"], 4) for r in recs],
        "params": model.num_params(),
        "active_params": model.num_params(active=True),
        "kv_bytes_per_token_bf16": model.kv_cache_bytes_per_token(2),
    }
    if "max_mean_load" in recs[-1]:
        result["max_mean_load_last20"] = sum(r["max_mean_load"] for r in tail) / len(tail)
        result["imbalance_last20"] = sum(r["imbalance"] for r in tail) / len(tail)
    return result


def plot_depth(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results.values():
        if r["experiment"].startswith("depth") and r.get("seed", 0) == 0:
            label = f"{r['arm']} (lr {r['train']['lr']:g})"
            ax.plot(range(1, len(r["grad_norm_trace"]) + 1), r["grad_norm_trace"], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("grad norm (before clipping)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)


def _fmt(values: list[Any], digits: int = 4) -> str:
    """Mean over seeds, with the per-seed values when there are several."""
    if not isinstance(values[0], float):
        return " / ".join(str(v) for v in values) if len(set(values)) > 1 else str(values[0])
    mean = sum(values) / len(values)
    each = " / ".join(f"{v:.{max(1, digits - 1)}f}" for v in values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ({each})"


COLUMNS = {
    "depth": ["eval_ce", "train_ce_last20", "spikes", "max_grad_norm"],
    "depth-lr1e-2": ["eval_ce", "train_ce_last20", "spikes", "max_grad_norm"],
    "moe": ["eval_ce", "max_mean_load_last20", "imbalance_last20"],
    "attn": ["eval_ce", "kv_bytes_per_token_bf16"],
    "mtp": ["eval_ce", "train_ce_last20"],
}


def grouped(results: dict[str, Any], exp: str) -> dict[str, list[dict[str, Any]]]:
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in results.values():
        if r["experiment"] == exp:
            by_arm.setdefault(r["arm"], []).append(r)
    return by_arm


def markdown(results: dict[str, Any]) -> str:
    """The ablation tables as markdown (for docs/pretrain.md)."""
    out = []
    for exp, keys in COLUMNS.items():
        by_arm = grouped(results, exp)
        if not by_arm:
            continue
        head = ["arm", *keys, "wall s"]
        lines = [f"**{exp}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, rows in by_arm.items():
            vals = [_fmt([r[k] for r in rows], 3) for k in keys]
            lines.append("| " + " | ".join([name, *vals, _fmt([float(r["wall_s"]) for r in rows], 0)]) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def print_tables(results: dict[str, Any]) -> None:
    for exp, keys in COLUMNS.items():
        by_arm = grouped(results, exp)
        if not by_arm:
            continue
        table = Table(title=f"pretrain ablation: {exp} (mean over seeds; per-seed values in brackets)")
        for c in ["arm", "seeds", *keys, "tokens", "wall_s"]:
            table.add_column(c)
        for name, rows in by_arm.items():
            vals = [_fmt([r[k] for r in rows]) for k in keys]
            seeds = ",".join(str(r.get("seed", 0)) for r in rows)
            table.add_row(name, seeds, *vals, f"{rows[0]['tokens']:,}", _fmt([float(r["wall_s"]) for r in rows], 1))
        console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small settings for a shared 2-core machine")
    ap.add_argument("--only", default="", help="comma-separated experiments (depth, depth-lr1e-2, moe, attn, mtp)")
    ap.add_argument("--force", action="store_true", help="rerun arms already in the results JSON")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modelfab-bench-pretrain")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch default)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; every arm runs once per seed")
    ap.add_argument("--markdown", action="store_true", help="print the stored results as markdown and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())["results"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    s = sizes(args.quick)
    work = args.work / ("quick" if args.quick else "full")
    if args.force:
        shutil.rmtree(work / "runs", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    data = prepare(work, s)
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if doc.get("settings") != s or doc.get("corpus_sha256") != data["corpus_sha256"]:
        doc = {}
    doc.update(
        {
            "machine": {**describe_machine(), "torch_threads": torch.get_num_threads()},
            "settings": s,
            "quick": args.quick,
            "corpus": "sorted *.py of the Python standard library (train: first files, eval: following files)",
            "corpus_sha256": data["corpus_sha256"],
            "eval_sha256": data["eval_sha256"],
            "tokenizer_sha256": data["tokenizer_sha256"],
            "train_tokens": data["train_tokens"],
        }
    )
    results: dict[str, Any] = doc.setdefault("results", {})
    only = {x for x in args.only.split(",") if x}
    seeds = [int(x) for x in args.seeds.split(",") if x]
    doc["seeds"] = sorted({*seeds, *(r.get("seed", 0) for r in results.values())})
    for seed in seeds:
        for arm in arms(s):
            key = f"{arm.experiment}/{arm.name}/seed{seed}"
            if (only and arm.experiment not in only) or (key in results and not args.force):
                continue
            console.print(f"[bold]{key}[/bold] ...")
            results[key] = run_arm(arm, s, data, work, seed)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(args.out)
    plot_depth(results)
    print_tables(results)


if __name__ == "__main__":
    main()
