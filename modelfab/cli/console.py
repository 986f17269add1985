"""``modelfab console``: the web console (lineage, datasets, labeling, pipeline runs, reports) on a local port."""

from __future__ import annotations

import typer

from modelfab.cli.common import console as out
from modelfab.cli.common import err_console, store


def console(
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8080, help="TCP port."),
    open_browser: bool = typer.Option(False, "--open", help="Open the console in the default browser."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No sign-in: every visitor is an admin (prints a warning)."),
) -> None:
    """Serve the web console (no models are loaded). Sign in with a key from `modelfab keys create`."""
    import uvicorn

    from modelfab.console.mount import console_app

    st = store()
    app = console_app(st, auth=not no_auth)
    url = f"http://{host}:{port}/console/"
    if no_auth:
        err_console.print("[bold red]WARNING: --no-auth: every visitor may label, promote and approve.[/]")
    out.print(f"console on {url} (store {st.safe_db_url}); sign in with a key from `modelfab keys create --role ...`")
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    finally:
        st.close()
