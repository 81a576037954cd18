"""The command line: `tessera serve`, `tessera init`."""

from pathlib import Path
from typing import Annotated

import typer
from pydantic import AliasChoices, ValidationError

from tessera.config import Settings, load_settings

app = typer.Typer(help="Tessera: a self-hosted PKI.", no_args_is_help=True)


def variable(name: str) -> str:
    """The environment variable of a setting: its first alias, if it has any."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"TESSERA_{name.upper()}"


SETTINGS_HELP = "\n\n".join(
    f"{variable(name)}: {field.description}" for name, field in Settings.model_fields.items()
)


def settings_from(**options: object) -> Settings:
    """A bad value, from an option, the environment or tessera.env, is one line naming it
    (never its value: it may be a password), not a traceback."""
    try:
        return load_settings(**options)
    except ValidationError as exc:
        problems = "; ".join(
            _problem(error["loc"], error["msg"].removeprefix("Value error, "), options)
            for error in exc.errors()
        )
        raise SystemExit(f"invalid configuration: {problems}") from None


def _problem(loc: tuple[int | str, ...], message: str, options: dict[str, object]) -> str:
    if not loc:  # a rule over several settings: its message names them
        return message
    name = str(loc[0])
    if options.get(name) is not None:
        where = "--" + name.replace("_", "-")
    elif name in Settings.model_fields:
        where = variable(name)
    else:
        where = name
    return f"{where}: {message}"


@app.command(
    help="Serve the whole application over HTTPS (and public endpoints over HTTP).\n\n"
    "Environment variables (also read from DATA_DIR/tessera.env):\n\n" + SETTINGS_HELP
)
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="HTTPS port")] = None,
    http_port: Annotated[int | None, typer.Option(help="Plain-HTTP port; 0 turns it off")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes (default: cores)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory")] = None,
) -> None:
    from tessera import bootstrap, server

    settings = settings_from(
        host=host, port=port, http_port=http_port, workers=workers, data_dir=data_dir
    )
    bootstrap.private_files()
    claim = server.claim_ports(settings)  # before the set-up: a server refused does none
    with server.Workers(settings) as pool:  # started first: see docs/process-model.md
        tls = bootstrap.initialize(settings)
        server.run(settings, tls, claim, pool)


@app.command(help="Create the data directory, database, KEK, admin user and TLS certificate.")
def init(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory")] = None,
) -> None:
    from tessera import bootstrap

    settings = settings_from(data_dir=data_dir)
    bootstrap.private_files()
    files = bootstrap.initialize(settings)
    typer.echo(f"Ready. TLS certificate: {files.cert}")


if __name__ == "__main__":
    app()
