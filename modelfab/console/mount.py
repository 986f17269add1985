"""Mount the console on a FastAPI app, or build a stand-alone console app (no models served)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from modelfab.console.api import router
from modelfab.console.context import ConsoleContext
from modelfab.store.store import Store

STATIC = Path(__file__).parent / "static"


def checkout_bench() -> Path | None:
    """``bench/results`` of the source checkout this package runs from, if there is one."""
    path = Path(__file__).resolve().parents[2] / "bench" / "results"
    return path if path.is_dir() else None


def mount_console(app: FastAPI, store_factory: Callable[[], Store], *, auth: bool = True,
                  bench_dir: Path | None = None) -> None:
    """Add ``/api/console/...`` and the static UI at ``/console/`` (``/`` redirects there when free).

    ``store_factory`` is called once, on the first request; ``auth=False`` (``--no-auth``) makes every
    caller an admin. The app must turn ``ModelfabError`` into JSON errors (the serve app's handlers do).
    """
    app.state.console = ConsoleContext(store_factory, auth=auth, bench_dir=bench_dir or checkout_bench())
    app.include_router(router)
    app.mount("/console", StaticFiles(directory=STATIC, html=True), name="console")
    if not any(getattr(r, "path", None) == "/" for r in app.router.routes):
        app.add_api_route("/", lambda: RedirectResponse("/console/"), include_in_schema=False)


def console_app(store: Store, *, auth: bool = True, bench_dir: Path | None = None) -> FastAPI:
    """A FastAPI app with only the console (and ``/healthz``), with the serve app's JSON error handlers."""
    from modelfab.serve.app import _handlers

    app = FastAPI(title="modelfab console", version="1",
                  description="The modelfab web console API. Send `Authorization: Bearer <key>`.")
    _handlers(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    mount_console(app, lambda: store, auth=auth, bench_dir=bench_dir)
    return app
