"""``modelfab data ingest-feedback``: served corrections -> the next dataset version."""

from __future__ import annotations

import typer

from modelfab.cli.common import JSON_HELP, console, print_json, store


def ingest_feedback(
    deployment: str = typer.Option(..., help="Deployment id (see `modelfab deployments list`)."),
    include_low_confidence_reviewed: bool = typer.Option(
        False, "--include-low-confidence-reviewed", help="Also ingest low-confidence cases a reviewer labelled."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Build the next version of the model's training dataset from a deployment's feedback."""
    from modelfab.data.feedback import ingest_feedback as ingest

    res = ingest(store(), deployment, include_low_confidence_reviewed=include_low_confidence_reviewed)
    out = {"dataset": res.ref, "version_id": res.version.id, "parent_id": res.version.parent_id,
           "created": res.created, "added": res.added, "relabelled": res.relabelled, "ingested": res.ingested,
           "skipped": res.skipped, "message": res.version.message}
    if as_json:
        print_json(out)
        return
    console.print(f"{res.ref} ({'new' if res.created else 'unchanged'}): {res.ingested} feedback rows, "
                  f"{res.added} new items, {res.relabelled} relabelled; skipped {res.skipped or 'none'}")
