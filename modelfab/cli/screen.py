"""``modelfab screen fit`` and ``modelfab screen run``: anomaly screening with a recall guarantee."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, print_json, store

app = typer.Typer(help="Screen raw images: drop the obviously normal ones at a stated defect recall.",
                  no_args_is_help=True)


def fit(
    backbone: str = typer.Option(..., help="Backbone model: an L0, an L1, or a tuned L2 (its adapted backbone)."),
    normal: str = typer.Option(..., help="DATASET@version[:split] of normal images."),
    split: str = typer.Option("train", help="Split to fit on (a ':split' in --normal wins; an unsplit version: all)."),
    scorer: str = typer.Option("knn-memory", help="knn-memory, gaussian or embedding-knn."),
    layers: str | None = typer.Option(None, help="Comma-separated backbone taps, e.g. block4,block10."),
    image_size: int | None = typer.Option(None, help="Input side in pixels (default the backbone's)."),
    max_memory_mb: float | None = typer.Option(None, help="Memory budget of the fitted state in MB."),
    task: str | None = typer.Option(None, help="Label view deciding what is normal (default the version's first)."),
    name: str | None = typer.Option(None, help="Name of the screening model (default DATASET-SCORER)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Fit a scorer on normal images and register it (L2, task screening).

    Normal items: with visible labels, the items of the split whose class under the task is not
    the positive (defect) class; with no labels, every item of the split.
    """
    from modelfab.screen.api import fit_screen

    config: dict[str, Any] = {}
    if layers:
        config["layers"] = [x.strip() for x in layers.split(",") if x.strip()]
    if image_size is not None:
        config["image_size"] = image_size
    if max_memory_mb is not None:
        config["max_memory_mb"] = max_memory_mb
    res = fit_screen(store(), backbone=backbone, normal=normal, split=split, scorer=scorer, config=config,
                     name=name, task=task)
    m = res.model
    info = {"model": m.id, "name": f"{m.name}:{m.version}", "parent": m.parent_id, "scorer": scorer,
            "items": res.items, "normal": res.rule, "seconds": res.seconds, "fitted": res.fitted, "run": res.run_id,
            "config": m.config}
    if as_json:
        print_json(info)
        return
    t = Table(title=f"screening model {m.name}:{m.version} ({m.id})")
    t.add_column("field")
    t.add_column("value")
    t.add_row("scorer", scorer)
    t.add_row("backbone", str(m.parent_id))
    t.add_row("layers / size", f"{','.join(m.config['layers'])} @ {m.config['image_size']} px")
    t.add_row("fitted on", res.rule)
    for k, v in res.fitted.items():
        t.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    t.add_row("seconds", f"{res.seconds:.1f}")
    t.add_row("run", res.run_id)
    console.print(t)


def run(
    model: str = typer.Option(..., help="Screening model (from `screen fit`)."),
    data: str = typer.Option(..., help="DATASET@version[:split] to screen (no split: every item)."),
    calibration: str = typer.Option(..., help="DATASET@version[:split] with labeled defects (default split "
                                              "calibration); the threshold is set here only."),
    target_recall: float = typer.Option(0.95, help="Defect recall to guarantee."),
    confidence: float = typer.Option(0.95, help="Confidence of the one-sided Clopper-Pearson bound."),
    task: str | None = typer.Option(None, help="Label view giving the defects (default the version's first)."),
    heatmaps: Path | None = typer.Option(None, help="Folder for anomaly heat-map PNGs of the items to label."),
    heatmap_limit: int = typer.Option(50, help="At most this many heat-maps (highest scores first)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Calibrate a threshold for the recall target, screen the data, write a version of the items to label."""
    from modelfab.screen.api import run_screen

    res = run_screen(store(), model=model, data=data, calibration=calibration, target_recall=target_recall,
                     confidence=confidence, task=task, heatmaps=heatmaps, heatmap_limit=heatmap_limit)
    cal = res.calibration
    version = res.version_ref
    info = {"run": res.run_id, "data": res.data_ref, "screened": res.screened, "to_label": len(res.ranked),
            "filtered": len(res.filtered), "filtered_fraction": res.filtered_fraction,
            "labeling_saved": res.filtered_fraction, "version": version, "calibration": cal.to_dict(),
            "observed": res.observed, "heatmaps": [str(p) for p in res.heatmaps],
            "top": [{"key": k, "score": s} for k, s in res.ranked[:10]]}
    if as_json:
        print_json(info)
        return
    t = Table(title=f"screen {res.data_ref}")
    t.add_column("field")
    t.add_column("value", justify="right")
    t.add_row("threshold", f"{cal.threshold:.6g}")
    t.add_row(f"recall lower bound ({cal.confidence:.0%})",
              f"{cal.recall_bound:.4f} >= {cal.target_recall:g} ({cal.detected}/{cal.defects} calibration defects)")
    t.add_row("calibration normals filtered", f"{cal.normals_filtered:.1%} of {cal.normals}")
    t.add_row("screened", f"{res.screened}")
    t.add_row("filtered as normal", f"{len(res.filtered)} ({res.filtered_fraction:.1%})")
    t.add_row("to label", f"{len(res.ranked)}")
    t.add_row("labeling saved", f"{res.filtered_fraction:.1%}")
    for k, v in res.observed.items():
        t.add_row(k.replace("_", " "), f"{v:.3f}")
    t.add_row("new version", version or "(none: nothing to label)")
    t.add_row("run", res.run_id)
    console.print(t)
    if res.heatmaps:
        console.print(f"heat-maps: {len(res.heatmaps)} PNG in {res.heatmaps[0].parent}")


app.command("fit")(fit)
app.command("run")(run)
