"""The command line: `tessera serve`, `tessera init`."""

from pathlib import Path
from typing import Annotated

import typer

from tessera.config import Settings, load_settings

app = typer.Typer(help="Tessera: a self-hosted PKI.", no_args_is_help=True)

SETTINGS_HELP = "\n\n".join(
    f"TESSERA_{name.upper()}: {field.description}"
    if name != "database_url"
    else f"DATABASE_URL: {field.description}"
    for name, field in Settings.model_fields.items()
)


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

    settings = load_settings(
        host=host, port=port, http_port=http_port, workers=workers, data_dir=data_dir
    )
    tls = bootstrap.initialize(settings)
    server.run(settings, tls)


@app.command(help="Create the data directory, database, KEK, admin user and TLS certificate.")
def init(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory")] = None,
) -> None:
    from tessera import bootstrap

    settings = load_settings(data_dir=data_dir)
    files = bootstrap.initialize(settings)
    typer.echo(f"Ready. TLS certificate: {files.cert}")


if __name__ == "__main__":
    app()
