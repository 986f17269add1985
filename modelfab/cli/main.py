"""The ``modelfab`` command line. Bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import sys

import click
import typer
from pydantic import ValidationError

from modelfab.cli import (
    adapt,
    compress,
    console,
    data,
    demo,
    doctor,
    feedback,
    flow,
    label,
    llm,
    models,
    pretrain,
    runs,
    screen,
    serve,
    tune,
    zoo,
)
from modelfab.core.errors import ModelfabError

app = typer.Typer(
    name="modelfab",
    help="A model factory: pretrain once (L0), adapt per industry (L1), derive scenario models (L2).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("doctor")(doctor.doctor)
app.command("demo")(demo.demo)
app.command("console")(console.console)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
models.app.command("add-foundation")(zoo.add_foundation)
models.app.command("zoo")(zoo.zoo_list)
app.command("adapt")(adapt.adapt)
app.command("tune")(tune.tune)
app.command("evaluate")(tune.evaluate)
app.add_typer(tune.strategies_app, name="strategies")
app.command("pretrain")(pretrain.pretrain)
app.add_typer(runs.app, name="runs")
app.command("run")(flow.run)
app.command("serve")(serve.serve)
app.add_typer(serve.keys_app, name="keys")
app.add_typer(serve.deployments_app, name="deployments")
models.app.command("promote")(serve.promote)
data.app.command("ingest-feedback")(feedback.ingest_feedback)
app.command("profile")(compress.profile)
app.command("export")(compress.export)
app.command("extract")(compress.extract)
app.add_typer(screen.app, name="screen")
app.add_typer(label.app, name="label")
app.add_typer(llm.app, name="llm")


def _fail(message: str, code: int = 2) -> int:
    first = " ".join(message.strip().split("\n")[0].split()) if message.strip() else "failed"
    print(f"error: {first}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also the console-script entry point)."""
    try:
        result = app(args=argv if argv is not None else sys.argv[1:], prog_name="modelfab", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool):  # typer.Exit(code) in non-standalone mode
            return result
    except ModelfabError as exc:
        return _fail(str(exc), exc.exit_code)
    except ValidationError as exc:
        e = exc.errors()[0]
        return _fail(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}")
    except (typer.Abort, click.exceptions.Abort):
        return _fail("aborted", 130)
    except (typer.Exit, click.exceptions.Exit) as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except (typer.TyperException, click.ClickException) as exc:  # usage errors: unknown command, bad option
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return _fail(message, int(getattr(exc, "exit_code", 2) or 2))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
