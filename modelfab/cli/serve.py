"""``modelfab serve``, ``modelfab keys ...``, ``modelfab deployments ...`` and ``models promote``."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from rich.table import Table

from modelfab.cli.common import JSON_HELP, console, err_console, print_json, store

keys_app = typer.Typer(help="API keys of the REST server: create, list, revoke.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployments: models served by `modelfab serve`.", no_args_is_help=True)


def serve(
    models: list[str] = typer.Argument(..., help="Models to serve: id, NAME, NAME:version or NAME@alias "
                                       "(scenario models, chat models and text encoders)."),
    port: int = typer.Option(8080, help="TCP port."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
    runtime: str = typer.Option("auto", help="auto (ONNX Runtime if an export passed parity), onnxruntime, torch."),
    workers: int = typer.Option(1, help="uvicorn worker processes (each loads the models)."),
    threads: int | None = typer.Option(None, help="Intra-op threads of the runtime (default: torch's setting)."),
    max_batch: int = typer.Option(32, help="Largest dynamic batch (inputs)."),
    max_wait_ms: float = typer.Option(5.0, help="Longest wait for batch companions, in ms."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Dynamic micro-batching."),
    concurrent_batches: int = typer.Option(1, help="Batches that may run at once (inference threads); "
                                           "2 with --threads 1 keeps 2 cores busy without intra-op sync."),
    ort_spinning: bool = typer.Option(False, "--ort-spinning/--no-ort-spinning",
                                      help="Let ONNX Runtime threads spin-wait between runs (off: CPU for the rest)."),
    low_confidence: float = typer.Option(0.6, help="Keep predictions below this confidence for review."),
    max_body_mb: float = typer.Option(10.0, help="Request body limit in MB (413 above)."),
    max_inputs: int = typer.Option(64, help="Inputs per request (413 above)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve WITHOUT API keys (prints a warning)."),
    chat_max_tokens: int = typer.Option(512, help="Largest max_tokens a chat request may ask for (422 above)."),
    chat_workers: int = typer.Option(4, help="Threads running chat generations and embeddings."),
) -> None:
    """Serve registered models over REST (FastAPI + uvicorn).

    Scenario models answer POST /v1/models/NAME:predict; chat models (chat L2s, L0/L1 causal LMs; LoRA
    L2s over one base share one copy of it) POST /v1/chat/completions; text encoders POST /v1/embeddings.
    """
    import uvicorn

    from modelfab.serve.app import create_app
    from modelfab.serve.chat_host import split_models, start_chat_deployments
    from modelfab.serve.config import ServeSettings
    from modelfab.serve.deployments import start_deployments, stop_deployments
    from modelfab.serve.runtime import plan_model

    settings = ServeSettings(
        host=host, port=port, runtime=runtime, workers=workers, threads=threads, batching=batching,  # type: ignore[arg-type]
        ort_spinning=ort_spinning,
        max_batch=max_batch, max_wait_ms=max_wait_ms, concurrent_batches=concurrent_batches,
        low_confidence=low_confidence,
        max_body_bytes=int(max_body_mb * 1024 * 1024), max_inputs=max_inputs, auth=not no_auth,
        chat_max_tokens=chat_max_tokens, chat_workers=chat_workers,
    )
    refs = list(dict.fromkeys(models))
    st = store()
    scenario_refs, chat_plans = split_models(st, refs)  # refuse bad models before starting
    plans = [plan_model(st, ref, settings.runtime) for ref in scenario_refs]
    if no_auth:
        err_console.print("[bold red]WARNING: --no-auth: every client may predict, send feedback and promote.[/]")
    base_url = f"http://{host}:{port}"
    deployments = {**start_deployments(st, plans, base_url), **start_chat_deployments(st, chat_plans, base_url)}
    table = Table(title=f"serving on {base_url}")
    for col in ("name", "model", "runtime", "deployment", "why"):
        table.add_column(col)
    for p in plans:
        model = f"{p.model.name}:{p.model.version} ({p.model.id})"
        table.add_row(p.ref, model, p.runtime, deployments[p.ref], p.reason)
    for c in chat_plans:
        why = f"{c.kind} model ({c.method}" + (f" over {c.base_id})" if c.method == "lora" else ")")
        table.add_row(c.ref, f"{c.model.name}:{c.model.version} ({c.model.id})", "torch", deployments[c.ref], why)
    console.print(table)
    try:
        if workers == 1:
            app = create_app(settings, refs, store=st, deployments=deployments, base_url=base_url)
            uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        else:
            spec = {"settings": settings.model_dump(), "models": refs, "deployments": deployments, "base_url": base_url}
            os.environ["MODELFAB_SERVE_SPEC"] = json.dumps(spec)
            # a worker loading torch + its models can hold the GIL for seconds on a busy CPU: uvicorn's default
            # 5 s health-check would kill and respawn it forever (seen on 2 cores), so allow a minute
            uvicorn.run("modelfab.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level="warning", access_log=False, timeout_worker_healthcheck=60)
    finally:
        stop_deployments(st, list(deployments.values()))
        console.print("stopped: " + ", ".join(deployments.values()))


def _key_dict(k: Any) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "role": k.role, "models": k.models,
            "created_at": k.created_at.isoformat(), "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="viewer, annotator, engineer or admin."),
    models: str | None = typer.Option(None, help="Comma-separated model scopes (default: every model)."),
    name: str = typer.Option("", help="A name to recognise the key by."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Create an API key; the key is printed once and only its salted hash is stored."""
    from modelfab.serve.auth import create_key

    row, token = create_key(store(), role, models.split(",") if models else None, name)
    if as_json:
        print_json({**_key_dict(row), "key": token})
        return
    console.print(f"created key {row.id} ({row.role}{', models ' + ','.join(row.models) if row.models else ''})")
    console.print("store it now, it is not shown again:")
    print(token)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List API keys (never their secrets)."""
    from modelfab.serve.auth import list_keys

    rows = list_keys(store())
    if as_json:
        print_json([_key_dict(k) for k in rows])
        return
    table = Table(title="API keys")
    for col in ("id", "name", "role", "models", "created", "revoked"):
        table.add_column(col)
    for k in rows:
        table.add_row(k.id, k.name, k.role, ",".join(k.models) if k.models else "(all)",
                      k.created_at.isoformat(timespec="seconds"),
                      k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key id (k-...).")) -> None:
    """Revoke a key (servers notice within their key cache time, 5 s by default)."""
    from modelfab.serve.auth import revoke_key

    row = revoke_key(store(), key_id)
    console.print(f"revoked {row.id}")


@deployments_app.command("list")
def deployments_list(
    status: str | None = typer.Option(None, help="Only active or stopped deployments."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List deployments with their model, endpoint, runtime, status and counters."""
    from modelfab.serve.deployments import list_deployments

    rows = list_deployments(store(), status)
    if as_json:
        print_json([{"id": d.id, "model_id": d.model_id, "endpoint": d.endpoint, "runtime": d.runtime,
                     "status": d.status, "counters": d.counters, "created_at": d.created_at.isoformat()} for d in rows])
        return
    table = Table(title="deployments")
    for col in ("id", "model", "endpoint", "runtime", "status", "predictions", "feedback"):
        table.add_column(col)
    for d in rows:
        c = d.counters or {}
        table.add_row(d.id, d.model_id, d.endpoint, d.runtime, d.status, str(c.get("predictions", 0)),
                      str(c.get("feedback", 0)))
    console.print(table)


def promote(
    ref: str = typer.Argument(..., help="The model to promote: id, NAME:version, NAME@alias."),
    alias: str = typer.Option("production", help="The alias to point at it."),
) -> None:
    """Point NAME@ALIAS at a model (the REST route POST /v1/models/{name}:promote needs engineer)."""
    from modelfab.store.models import set_alias

    m = set_alias(store(), ref, alias)
    console.print(f"{m.name}@{alias} -> {m.id} (version {m.version})")
