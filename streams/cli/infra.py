"""`loopline infra up | status | down | fetch`: local Kafka, Redis and LLM server, no Docker.

Human-readable output goes to stderr; stdout carries only `LOOPLINE_*=value` lines, so that
`eval "$(loopline infra status)"` points a shell at the running services.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from loopline.streams.local import services
from loopline.streams.settings import LOCAL_KAFKA_PORT, LOCAL_LLM_PORT, LOCAL_REDIS_PORT, Settings

app = typer.Typer(
    help="Start, check and stop a local Kafka, Redis and LLM server (no Docker needed).",
    no_args_is_help=True,
)
console = Console(stderr=True)


@app.command()
def up(
    llm: bool = typer.Option(False, "--llm", help="Also start the local LLM server."),
    llm_model: str = typer.Option(
        None,
        "--llm-model",
        help="Model for the LLM server (implies --llm; default: LOOPLINE_LLM_MODEL)",
    ),
    kafka_port: int = typer.Option(
        LOCAL_KAFKA_PORT, help="Kafka's port; its controller takes the next one."
    ),
    redis_port: int = typer.Option(LOCAL_REDIS_PORT, help="Redis's port."),
    llm_port: int = typer.Option(LOCAL_LLM_PORT, help="The LLM server's port."),
    kafka_sasl_ssl: bool = typer.Option(
        False,
        "--kafka-sasl-ssl",
        help="Start Kafka with only a SASL_SSL listener: a throwaway CA and certificate, user "
        "`loopline` under PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (the printed settings use "
        "SCRAM-SHA-512).",
    ),
) -> None:
    """Start Kafka and Redis (reusing running ones) and wait until they answer."""
    settings = Settings()
    model = llm_model or (settings.llm_model if llm else None)
    ports = services.LocalPorts(kafka=kafka_port, redis=redis_port, llm=llm_port)
    security = "SASL_SSL" if kafka_sasl_ssl else "PLAINTEXT"
    endpoints = services.up(
        settings, llm_model=model, ports=ports, console=console, kafka_security=security
    )
    typer.echo("\n".join(endpoints.env_lines()))


@app.command()
def status() -> None:
    """Show the services; exit 0 only when Kafka and Redis answer, printing eval-able lines."""
    states = services.report(Settings())
    console.print(_status_table(states))
    endpoints = services.endpoints_of(states)
    if endpoints is None:
        console.print("Kafka and Redis are not both answering: run `loopline infra up`.")
        raise typer.Exit(1)
    typer.echo("\n".join(endpoints.env_lines()))


@app.command()
def down() -> None:
    """Stop the services `loopline infra up` started here (existing ones are left alone)."""
    if not services.down(Settings(), console=console):
        console.print("Nothing to stop.")


@app.command()
def fetch() -> None:
    """Resolve the Kafka broker's jars from Maven Central now, so the first `up` is quick."""
    libs = services.resolve_kafka_jars(Settings().cache_dir, console)
    console.print(f"Kafka jars ready in {libs}")


def _status_table(states: list[services.ServiceState]) -> Table:
    table = Table("service", "address", "answers", "process", box=None)
    for state in states:
        answers = "[green]yes[/]" if state.answers else "[red]no[/]"
        how = state.how + (f", model {state.model}" if state.model else "")
        table.add_row(state.title, state.address or "-", answers, how)
    return table
