"""Console routes for reports: evaluation reports under ``MODELFAB_HOME/reports`` and benchmark charts under
``bench/results`` of a checkout, served only from inside those folders (no path traversal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from modelfab.console.context import Caller, ConsoleContext, Ctx
from modelfab.core.errors import NotFoundError
from modelfab.store.schema import Model

router = APIRouter()
TYPES = {".png": "image/png", ".html": "text/html; charset=utf-8", ".json": "application/json"}
# reports are self-contained HTML (inline PNGs and CSS); nothing they contain may run or load anything
HTML_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"


def roots(ctx: ConsoleContext) -> dict[str, Path]:
    out = {"reports": ctx.store.settings.home / "reports"}
    if ctx.bench_dir is not None:
        out["bench"] = ctx.bench_dir
    return out


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file()) if root.is_dir() else []


@router.get("/reports")
def reports(ctx: Ctx, _: Caller) -> dict[str, Any]:
    """Evaluation reports (HTML + PNG plots per model and data) and benchmark charts (PNG + JSON)."""
    base = roots(ctx)
    evals = []
    home_reports = base["reports"]
    with ctx.store.session() as s:
        names = {m.id: f"{m.name}:{m.version}" for m in s.query(Model).all()}
    for html in _files(home_reports, "**/report.html"):
        folder = html.parent
        rel = folder.relative_to(home_reports)
        model_id = rel.parts[0] if rel.parts else ""
        evals.append({"model_id": model_id, "model": names.get(model_id, model_id), "name": str(rel),
                      "html": f"reports/{rel.as_posix()}/report.html",
                      "plots": [f"reports/{p.relative_to(home_reports).as_posix()}" for p in _files(folder, "*.png")],
                      "modified": html.stat().st_mtime})
    bench = []
    if "bench" in base:
        for p in _files(base["bench"], "*.png"):
            sibling = p.with_suffix(".json")
            bench.append({"name": p.stem, "png": f"bench/{p.name}",
                          "json": f"bench/{sibling.name}" if sibling.is_file() else None})
    return {"evaluations": sorted(evals, key=lambda e: -e["modified"]), "bench": bench}


@router.get("/files/{root}/{path:path}", response_class=FileResponse)
def report_file(root: str, path: str, ctx: Ctx, _: Caller) -> FileResponse:
    """A PNG, HTML or JSON file inside a report root; anything outside it (``..``, links out) is a 404."""
    base = roots(ctx).get(root)
    if base is None:
        raise NotFoundError(f"unknown report root {root!r}; use reports or bench")
    top = base.resolve()
    target = (top / path).resolve()
    if not target.is_relative_to(top) or not target.is_file() or target.suffix.lower() not in TYPES:
        raise NotFoundError(f"no report file {path!r} under {root}")
    headers = {"Content-Security-Policy": HTML_CSP, "X-Content-Type-Options": "nosniff"}
    return FileResponse(target, media_type=TYPES[target.suffix.lower()], headers=headers)
