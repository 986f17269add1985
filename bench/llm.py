"""Language-model track benchmark on CPU: SFT speed (LoRA vs full), generation speed, DPO vs SFT-only,
and knowledge QA with vs without retrieval, on the Brookhaven handbook (bench/data, fictional, hand-written).

Arms (each resumable: a finished arm is kept in bench/results/llm.json while the header is unchanged):
  sft         LoRA and full SFT of SmolLM2-135M-Instruct on policy-sft.csv (same data, batch, length, seed):
              steady tokens/s (optimizer steps after the first), wall, val loss before/after, the
              general-set NLL change (forgetting) -- same run, ratio full/LoRA.
  generation  greedy decoding of the L0 and of the LoRA SFT model (adapter applied): time to first token and
              tokens/s over the same prompts.
  dpo         candidates from the SFT model for the 30 prompts of policy-prompts.csv, ranked by the
              reference-F1 rule (synthetic, marked so), all pairs, DPO continuing the SFT adapter; held-out
              pairs (val + test prompts): fraction where the chosen answer gets the higher mean log-likelihood,
              SFT-only vs DPO, and DPO's implicit-reward accuracy against the SFT model.
  dpo-longer  DPO again on the same pairs, learning rate 5e-4 and 2 epochs (the default 20 steps barely move it).
  rag         the handbook indexed with MiniLM (chunks of 200 tokens, overlap 40); the QA set (policy-qa.jsonl,
              hand-written) answered by the L0 with retrieval (k=3) and without: recall@1/@3, token F1,
              key-fact score and accuracy (all key facts present) -- the rule of modelfab.llm.rag.scoring.

    .venv/bin/python bench/llm.py [--arms sft,generation,dpo,rag] [--qa-items 90]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
OUT = ROOT / "bench" / "results" / "llm.json"
HOME = Path(os.environ.get("MODELFAB_BENCH_LLM_HOME", ROOT / "bench" / ".home-llm")).resolve()
console = Console()
PROMPTS = ["How do I renew my residence permit?", "What does a dog licence cost?",
           "When is the bulky waste collected?", "How can I appeal a parking fine?"]


def setup(store: Any) -> dict[str, str]:
    """Register the L0s and render the datasets (idempotent: the same inputs return the same versions)."""
    from modelfab.llm.templates import render_dataset
    from modelfab.zoo.registry import register_foundation

    register_foundation(store, "smollm2-135m", name="smollm2")
    register_foundation(store, "minilm-l6", name="minilm")
    here = ROOT / "examples" / "policy-assistant"
    sft, _ = render_dataset(store, DATA / "policy-template.yaml", model="smollm2", name="policy-sft",
                            rows=DATA / "policy-sft.csv", max_tokens=256)
    general, _ = render_dataset(store, here / "general-template.yaml", model="smollm2", name="general-qa",
                                rows=DATA / "general-qa.csv", max_tokens=256)
    prompts, _ = render_dataset(store, here / "prompts-template.yaml", model="smollm2", name="policy-prompts",
                                rows=DATA / "policy-prompts.csv", max_tokens=256)
    return {"sft": sft.ref, "general": general.ref, "prompts": prompts.ref}


def arm_sft(store: Any, refs: dict[str, str], steps: int) -> dict[str, Any]:
    from modelfab.llm.sft import SFTConfig, sft

    out: dict[str, Any] = {}
    for method, n in (("lora", steps), ("full", max(4, steps // 2))):
        cfg = SFTConfig.model_validate({"method": method, "max_steps": n, "batch_size": 2, "max_length": 256, "seed": 0,
                                        "general_ref": refs["general"], "general_max_items": 40,
                                        "replay_ref": refs["general"], "replay_ratio": 0.2})
        start = time.perf_counter()
        model = sft(store, "smollm2", refs["sft"], f"bench-sft-{method}", cfg, log=lambda _: None)
        m = dict(model.metrics or {})
        out[method] = {"model": model.id, "steps": n, "wall_s": round(time.perf_counter() - start, 1),
                       **{k: m.get(k) for k in ("steady_tokens_per_s", "step_tokens_per_s", "train_tokens_per_s",
                                                "val_loss_base", "val_loss", "general_nll_change",
                                                "trainable_fraction", "replay_fraction")}}
        console.print(f"sft {method}: {out[method]}")
    lora, full = out["lora"].get("steady_tokens_per_s"), out["full"].get("steady_tokens_per_s")
    out["full_over_lora_tokens_per_s"] = round(full / lora, 2) if lora and full else None
    return out


def arm_generation(store: Any, lora_model: str, new_tokens: int) -> dict[str, Any]:
    from modelfab.llm.models import load_chat_model

    out: dict[str, Any] = {}
    for label, ref in (("L0", "smollm2"), ("LoRA SFT", lora_model)):
        chat = load_chat_model(store, ref)
        chat.generate([{"role": "user", "content": "Hello"}], max_new_tokens=4)  # warm-up
        gens = [chat.generate([{"role": "user", "content": p}], max_new_tokens=new_tokens) for p in PROMPTS]
        tokens = sum(g.completion_tokens for g in gens)
        out[label] = {"prompts": len(gens), "completion_tokens": tokens,
                      "tokens_per_s": round(tokens / sum(g.total_s for g in gens), 2),
                      "ttft_ms_mean": round(1000 * sum(g.first_token_s for g in gens) / len(gens), 1),
                      "ttft_ms_max": round(1000 * max(g.first_token_s for g in gens), 1)}
        console.print(f"generation {label}: {out[label]}")
    return out


def _pref(store: Any, model: str, pairs: str, reference: str | None = None) -> dict[str, Any]:
    """Preference metrics over the val and test splits together (pair-weighted)."""
    from modelfab.core.errors import DataError
    from modelfab.llm.lm_eval import evaluate_registered

    prefs = []
    for split in ("val", "test"):
        try:
            prefs.append(evaluate_registered(store, model, preferences_ref=pairs, split=split, reference_ref=reference,
                                             max_length=320))
        except DataError:  # no pairs in that split
            continue
    n = sum(int(p.get("pairs", 0)) for p in prefs)
    out: dict[str, Any] = {"pairs": n}
    for key in ("preference_accuracy", "reward_accuracy"):
        vals = [(float(p[key]), int(p["pairs"])) for p in prefs if p.get(key) is not None and p.get("pairs")]
        if vals:
            out[key] = round(sum(v * w for v, w in vals) / sum(w for _, w in vals), 4)
    return out


def arm_dpo(store: Any, refs: dict[str, str], sft_model: str, n: int, new_tokens: int, steps: int) -> dict[str, Any]:
    from modelfab.llm.dpo import DPOConfig, dpo
    from modelfab.llm.preference import pairs
    from modelfab.llm.ranking import candidates, synthetic_rankings

    start = time.perf_counter()
    cand = candidates(store, sft_model, refs["prompts"], n, "bench-candidates", max_new_tokens=new_tokens,
                      temperature=0.8, seed=0)
    gen_s = time.perf_counter() - start
    ranked = synthetic_rankings(store, cand.ref, "reference-f1")
    report = pairs(store, ranked.ref, "bench-preferences", include_synthetic=True, all_pairs=True)
    prefs = report.result.ref
    cfg = DPOConfig(max_steps=steps, batch_size=2, max_length=320, truncate=True, seed=0)
    t0 = time.perf_counter()
    model = dpo(store, sft_model, prefs, "bench-dpo", cfg, log=lambda _: None)
    dpo_s = time.perf_counter() - t0
    out = {"candidates": cand.ref, "generation_s": round(gen_s, 1), "pairs": report.as_dict(), "dpo_steps": steps,
           "dpo_wall_s": round(dpo_s, 1), "dpo_model": model.id,
           "sft_only": _pref(store, sft_model, prefs), "dpo": _pref(store, model.id, prefs, reference=sft_model),
           "synthetic": True}
    console.print(f"dpo: {out['sft_only']} -> {out['dpo']}")
    return out


def arm_dpo_longer(store: Any, sft_model: str, prefs: str, lr: float, epochs: float) -> dict[str, Any]:
    """DPO again on the same pairs with a larger learning rate and whole epochs (the first arm's 20 steps
    at the default rate left the DPO loss at ln 2)."""
    from modelfab.llm.dpo import DPOConfig, dpo

    cfg = DPOConfig(lr=lr, epochs=epochs, batch_size=2, max_length=320, truncate=True, seed=0)
    t0 = time.perf_counter()
    model = dpo(store, sft_model, prefs, "bench-dpo-longer", cfg, log=lambda _: None)
    m = dict(model.metrics or {})
    out = {"lr": lr, "epochs": epochs, "steps": m.get("global_step"), "dpo_wall_s": round(time.perf_counter() - t0, 1),
           "dpo_model": model.id, "train_loss": m.get("train_loss"),
           "train_reward_accuracy": m.get("train_reward_accuracy"),
           "dpo": _pref(store, model.id, prefs, reference=sft_model), "synthetic": True}
    console.print(f"dpo-longer: {out}")
    return out


def arm_rag(store: Any, qa_items: int, k: int, new_tokens: int) -> dict[str, Any]:
    from modelfab.llm.rag.index import build_index
    from modelfab.llm.rag.qa_eval import evaluate_qa

    index = build_index(store, DATA / "policy-docs", "minilm", "brookhaven-handbook", 200, 40)
    out: dict[str, Any] = {"index": index.id, "chunks": (index.metrics or {}).get("chunks"), "k": k,
                           "qa_items": qa_items, "model": "smollm2 (L0)"}
    for arm, retrieval in (("rag", True), ("no_retrieval", False)):
        rep = evaluate_qa(store, index.id, "smollm2", DATA / "policy-qa.jsonl", k=k, retrieval=retrieval,
                          limit=qa_items, max_new_tokens=new_tokens)
        out[arm] = {key: rep.get(key) for key in ("items", "recall@1", "recall@k", "f1", "fact_score", "accuracy",
                                                  "over_context", "seconds")}
        out[arm]["examples"] = [{k2: r[k2] for k2 in ("id", "answer", "correct")} for r in rep["rows"][:3]]
        console.print(f"{arm}: {out[arm]}")
    return out


def table(cells: dict[str, Any]) -> None:
    t = Table(title="language-model track (bench/llm.py)")
    t.add_column("arm")
    t.add_column("result", overflow="fold")
    if "sft" in cells:
        c = cells["sft"]
        for m in ("lora", "full"):
            t.add_row(f"SFT {m}", f"{c[m]['steady_tokens_per_s']} tokens/s (steady), val loss {c[m]['val_loss_base']}"
                      f" -> {c[m]['val_loss']}, general NLL change {c[m]['general_nll_change']}")
        t.add_row("SFT full / LoRA speed", str(c.get("full_over_lora_tokens_per_s")))
    if "generation" in cells:
        for label, c in cells["generation"].items():
            t.add_row(f"generate {label}", f"{c['tokens_per_s']} tokens/s, TTFT {c['ttft_ms_mean']} ms mean")
    if "dpo" in cells:
        c = cells["dpo"]
        t.add_row("held-out pairs: SFT only", json.dumps(c["sft_only"]))
        t.add_row("held-out pairs: DPO", json.dumps(c["dpo"]))
    if "dpo-longer" in cells:
        c = cells["dpo-longer"]
        t.add_row(f"held-out pairs: DPO lr {c['lr']}, {c['epochs']} epochs", json.dumps(c["dpo"]))
    if "rag" in cells:
        c = cells["rag"]
        for arm in ("rag", "no_retrieval"):
            t.add_row(f"QA {arm}", json.dumps({k: v for k, v in c[arm].items() if k != "examples"}))
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="sft,generation,dpo,dpo-longer,rag")
    ap.add_argument("--sft-steps", type=int, default=12)
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=40)
    ap.add_argument("--qa-items", type=int, default=90)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    os.environ["MODELFAB_HOME"] = str(HOME)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    sys.path.append(str(Path(__file__).parent))
    from common import ResultFile

    from modelfab.store.store import open_store

    header = {"bench": "llm", "sft_steps": args.sft_steps, "dpo_steps": args.dpo_steps, "candidates": args.candidates,
              "new_tokens": args.new_tokens, "qa_items": args.qa_items, "k": args.k, "seeds": [0],
              "data": "bench/data (Brookhaven handbook, fictional, hand-written)",
              "split": "keyed 80/10/10 by item key (modelfab.llm.formats.keyed_splits, seed 0)"}
    results = ResultFile(OUT, header)
    arms = args.arms.split(",")
    store = open_store()
    refs = setup(store)
    results.data["datasets"] = refs
    if "sft" in arms and not results.done("sft"):
        results.put("sft", arm_sft(store, refs, args.sft_steps))
    lora_model = results.data["cells"].get("sft", {}).get("lora", {}).get("model")
    if "generation" in arms and not results.done("generation") and lora_model:
        results.put("generation", arm_generation(store, lora_model, 48))
    if "dpo" in arms and not results.done("dpo") and lora_model:
        results.put("dpo", arm_dpo(store, refs, lora_model, args.candidates, args.new_tokens, args.dpo_steps))
    dpo_cell = results.data["cells"].get("dpo")
    if "dpo-longer" in arms and not results.done("dpo-longer") and lora_model and dpo_cell:
        results.put("dpo-longer", arm_dpo_longer(store, lora_model, dpo_cell["pairs"]["dataset"], 5e-4, 2.0))
    if "rag" in arms and not results.done("rag"):
        results.put("rag", arm_rag(store, args.qa_items, args.k, args.new_tokens))
    table(results.data["cells"])
    console.print(f"results: {OUT}")


if __name__ == "__main__":
    main()
