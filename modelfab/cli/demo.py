"""``modelfab demo``: the factory loop end to end on the embedded default store.

Each issue extends this with its step. Today: import ELPV, relabel a few items (a new version
with the first as parent), show versions, tasks and the official split; register the L0
EfficientNet-Lite0 and Lite2, tune a few-shot L2 from Lite0 defect model from it, evaluate it on the test split, draw
the lineage and print a summary.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import console, store
from modelfab.cli.data import describe, versions_table
from modelfab.data import import_elpv, import_labels


def _timed(steps: list[tuple[str, float, str]], name: str, fn: Callable[[], Any], note: Callable[[Any], str]) -> Any:
    t0 = time.perf_counter()
    result = fn()
    steps.append((name, time.perf_counter() - t0, note(result)))
    return result


def demo(
    name: str = typer.Option("elpv", help="Dataset name for ELPV."),
    shots: int = typer.Option(20, help="Labeled train images per class for the scenario model."),
) -> None:
    """Run the main job end to end on the configured store (default: SQLite under ~/.modelfab)."""
    st = store()
    console.rule("[bold]modelfab demo")
    console.print(f"store: {st.safe_db_url}, artifacts: {st.artifacts.url}")
    steps: list[tuple[str, float, str]] = []
    first = _timed(
        steps,
        "import ELPV",
        lambda: import_elpv(st, name),
        lambda r: f"{r.ref}: {r.items} images ({'new' if r.created else 'already imported'})",
    )
    v1 = f"{name}@{first.version.version}"
    with tempfile.TemporaryDirectory() as tmp:
        relabel = Path(tmp) / "review.csv"
        with relabel.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "probability"])
            # An expert re-reviews three uncertain cells and marks them as defective.
            for key in ("cell0004.png", "cell0010.png", "cell0020.png"):
                w.writerow([key, "1.0"])
        second = _timed(
            steps,
            "import reviewed labels",
            lambda: import_labels(st, v1, relabel, message="expert review"),
            lambda r: f"{r.ref} (parent {v1})",
        )
    info = _timed(steps, "describe", lambda: describe(second.ref), lambda i: f"{len(i['tasks'])} tasks")
    seed = info["split_info"].get("seed")
    table = Table(title=f"{info['dataset']}@{info['version']}: tasks on the official split (seed {seed})")
    table.add_column("task")
    splits = list(info["splits"])
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("classes")
    for tname, t in info["tasks"].items():
        per = [str(sum(t["by_split"].get(s, {}).values())) for s in splits]
        table.add_row(tname, *per, ", ".join(f"{c}={n}" for c, n in t["distribution"].items()))
    console.print(table)
    console.print(versions_table(info["versions"]))
    from modelfab.evaluate.model_eval import evaluate_model
    from modelfab.tune import TuneConfig, tune
    from modelfab.zoo.registry import register_foundation

    def register_vision_l0s() -> Any:
        lite0, _ = register_foundation(st, "efficientnet-lite0")
        register_foundation(st, "efficientnet-lite2")
        return lite0

    l0 = _timed(
        steps, "register L0s", register_vision_l0s, lambda m: f"{m.name} ({m.params:,} params), efficientnet-lite2"
    )
    cfg = TuneConfig(labels="elpv-defect", shots=shots, method="probe")
    l2 = _timed(
        steps,
        f"tune L2 ({shots} labels/class)",
        lambda: tune(st, base=l0.id, data=second.ref, name="solar-cell-defect", cfg=cfg),
        lambda r: f"{r.model.name}:{r.model.version} val AUROC {r.val_metrics.get('auroc', 0):.3f}",
    )
    ev = _timed(
        steps,
        "evaluate on test",
        lambda: evaluate_model(st, l2.model.id, f"{second.ref}:test"),
        lambda e: f"AUROC {e.result.metrics.auroc:.3f}, AP {e.result.metrics.ap:.3f}",
    )
    from modelfab.cli.models import lineage_

    lineage_(l2.model.id, as_json=False)
    summary = Table(title="summary")
    for col in ("step", "seconds", "result"):
        summary.add_column(col)
    for step, secs, note in steps:
        summary.add_row(step, f"{secs:.2f}", note)
    console.print(summary)
    console.print(f"split hash {info['split_info'].get('hash')}; report: {ev.report_dir / 'report.html'}")
    console.print(
        f"next: `modelfab models show {l2.model.name}`, `modelfab evaluate {l2.model.name} --data {second.ref}:test`"
    )
