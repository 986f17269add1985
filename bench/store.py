"""Store benchmark: import and versioning throughput, SQLite vs PostgreSQL, on generated data.

Arms (each on both backends, in one run so the ratio is fair):
  images-import    N generated PNGs (default 10,000) imported as a new dataset
  images-version   relabel every image (export -> change -> import-labels): version 2
  text-import      M generated text rows (default 100,000) from a CSV
  text-version     relabel every row: version 2

Prints a table and writes bench/results/store.json with the machine, seed and split hashes.
Usage: python bench/store.py [--images 10000] [--rows 100000] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from modelfab.core.config import Settings
from modelfab.core.machine import describe_machine
from modelfab.data import import_image_folder, import_labels, import_text_table
from modelfab.store.pgserver import PostgresUnavailable, TemporaryPostgres
from modelfab.store.store import Store

SEED = 0
OUT = Path(__file__).parent / "results" / "store.json"


def make_images(root: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = "ok" if i % 4 else "ng"
        arr = rng.integers(0, 255, size=(32, 32), dtype=np.uint8)
        path = root / cls / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)


def make_table(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = ["belt", "camera", "fault", "wagon", "bearing", "crack", "hotline", "billing", "outage", "noise"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            text = " ".join(words[j] for j in rng.integers(0, len(words), size=12)) + f" #{i}"
            w.writerow([text, "pos" if rng.random() < 0.3 else "neg"])


def relabel_file(store: Store, ref: str, path: Path) -> None:
    rows = store.version_items(ref)
    flip = {"ok": "ng", "ng": "ok", "pos": "neg", "neg": "pos"}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "label"])
        for r in rows:
            w.writerow([r.key, flip[r.labels["label"]]])


def run_backend(
    backend: str, db_url: str, work: Path, images: Path, table: Path, n_img: int, n_rows: int
) -> list[dict[str, Any]]:
    home = work / f"home-{backend}"
    st = Store(
        Settings(home=home, db_url=db_url or f"sqlite:///{home / 'modelfab.db'}", artifacts_url=str(home / "artifacts"))
    )
    results = []

    def arm(name: str, n: int, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
        results.append({"backend": backend, "arm": name, "items": n, "seconds": secs, "items_per_s": n / secs})
        return out

    img = arm("images-import", n_img, lambda: import_image_folder(st, images, "gen-images"))
    relabel_file(st, img.ref, work / f"img-labels-{backend}.csv")
    arm("images-version", n_img, lambda: import_labels(st, img.ref, work / f"img-labels-{backend}.csv"))
    txt = arm("text-import", n_rows, lambda: import_text_table(st, table, "gen-text"))
    relabel_file(st, txt.ref, work / f"txt-labels-{backend}.csv")
    arm("text-version", n_rows, lambda: import_labels(st, txt.ref, work / f"txt-labels-{backend}.csv"))
    for r in results:
        r["split_hash"] = (img if r["arm"].startswith("images") else txt).version.split_info["hash"]
    st.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="1,000 images and 10,000 rows")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.quick:
        args.images, args.rows = 1_000, 10_000
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="modelfab-bench-store-"))
    try:
        console.print(f"generating {args.images} images and {args.rows} rows (seed {SEED}) in {work}")
        make_images(work / "images", args.images, SEED)
        make_table(work / "table.csv", args.rows, SEED)
        results = run_backend("sqlite", "", work, work / "images", work / "table.csv", args.images, args.rows)
        try:
            with TemporaryPostgres() as pg:
                results += run_backend(
                    "postgresql",
                    pg.create_database("bench"),
                    work,
                    work / "images",
                    work / "table.csv",
                    args.images,
                    args.rows,
                )
        except PostgresUnavailable as exc:
            console.print(f"[yellow]PostgreSQL arm skipped: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"store throughput ({args.images:,} images, {args.rows:,} text rows)")
    for col in ("arm", "backend", "items", "seconds", "items/s", "vs sqlite"):
        table.add_column(col, justify="right" if col not in ("arm", "backend") else "left")
    base = {r["arm"]: r["items_per_s"] for r in results if r["backend"] == "sqlite"}
    for r in results:
        table.add_row(
            r["arm"],
            r["backend"],
            f"{r['items']:,}",
            f"{r['seconds']:.2f}",
            f"{r['items_per_s']:,.0f}",
            f"{r['items_per_s'] / base[r['arm']]:.2f}x",
        )
    console.print(table)
    machine = describe_machine()
    console.print(f"machine: {machine['cpu']} x{machine['cores']}, {machine.get('memory_gib')} GiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "store",
                "machine": machine,
                "seed": SEED,
                "images": args.images,
                "rows": args.rows,
                "results": results,
            },
            indent=1,
        )
    )
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
