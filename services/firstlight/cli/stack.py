"""The local stack: start it (``up``), run the demo against it, show its health."""

from __future__ import annotations

import signal
import socket
import time
from typing import Annotated

import typer
from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.demo import run_demo
from firstlight.sdk import Firstlight
from firstlight.stack import (
    ADMIN_KEY_ENTRY,
    SERVICES,
    STACK_FILE,
    LocalStack,
    read_stack_file,
    read_supervisor_file,
    wait_http,
    wait_serving,
)
from firstlight.stack import _uptime as format_uptime  # the supervisor's own format


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


@command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    demo: Annotated[bool, typer.Option(help="Run the demo once the stack is up")] = True,
    serve: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C")] = True,
    supervise: Annotated[bool, typer.Option(help="Restart a component that exits, with backoff")] = True,
) -> None:
    """Start the whole local stack: Kafka broker, Triton, and the six services."""
    # Ctrl-C (SIGINT) stops the stack even when this process inherited SIGINT ignored, as a
    # command started in the background by a non-interactive shell does (Python then keeps
    # SIG_IGN and would never raise KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console.print("[bold]Starting Firstlight[/bold] (broker, Triton, ingestion, embedding, search, inference, training, curation, gateway)…")
    t0 = time.perf_counter()
    stack = LocalStack(data_dir, supervise=supervise, service_ports={"gateway": 8080} if _port_free(8080) else {})
    try:
        stack.start()
        table = Table(title=f"Firstlight is up in {time.perf_counter() - t0:.1f}s")
        table.add_column("component")
        table.add_column("address")
        for name, addr in stack.addresses.items():
            if name != ADMIN_KEY_ENTRY:
                table.add_row(name, addr)
        table.add_row("admin key", f"in {data_dir / STACK_FILE} (the SDK and CLI read it from there)")
        console.print(table)
        console.print(f"logs: {stack.log_dir}")
        console.print(
            f"[bold]Portal:[/bold] {stack.gateway_url}/portal/  (sign in with an app key, or with the admin key and app id "
            f"'demo' for the demo's images; the admin key: "
            f"`python -c \"import json;print(json.load(open('{data_dir / STACK_FILE}'))['{ADMIN_KEY_ENTRY}'])\"`)  ·  "
            f"HTTP API docs: {stack.gateway_url}/v1/docs"
        )
        if demo:
            with Firstlight.from_stack(data_dir) as fl:
                run_demo(fl, console)
        if serve:
            _serve_until_stopped()
    finally:
        console.print("Stopping…")
        stack.stop()


def _serve_until_stopped() -> None:
    console.print("[green]Serving. Press Ctrl-C to stop.[/green]")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


@command()
def demo(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Run the demo against a running stack."""
    with client(data_dir) as fl:
        run_demo(fl, console)


@command()
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Health of each component of the local stack."""
    addrs = read_stack_file(data_dir)
    supervised = (read_supervisor_file(data_dir) or {}).get("components", {})
    table = Table(title="Firstlight")
    for column in ("component", "state", "address", "pid", "uptime", "restarts", "last exit"):
        table.add_column(column)
    now = time.time()

    def row(name: str, state: str, address: str) -> None:
        c = supervised.get(name, {})
        if c.get("state") in ("backoff", "restarting"):
            state = f"[yellow]{c['state'].upper()}[/yellow]"
        uptime = format_uptime(now - c["started_at"]) if c.get("started_at") and c.get("state") == "running" else ""
        table.add_row(name, state, address, str(c.get("pid") or ""), uptime, str(c.get("restarts", "")), c.get("last_exit", ""))

    for name in ("broker", "triton"):
        address = addrs.get("kafka" if name == "broker" else name, "")
        row(name, "[green]UP[/green]" if _port_open(address) else "[red]DOWN[/red]", address)
    for name in SERVICES:
        try:
            wait_serving(addrs[name], timeout_s=2)
            row(name, "[green]SERVING[/green]", addrs[name])
        except Exception:  # noqa: BLE001 - any failure reads as DOWN
            row(name, "[red]DOWN[/red]", addrs.get(name, ""))
    if "gateway" in addrs:
        try:
            wait_http(f"{addrs['gateway']}/healthz", timeout_s=2)
            row("gateway", "[green]SERVING[/green]", f"{addrs['gateway']}/portal/")
        except Exception:  # noqa: BLE001 - any failure reads as DOWN
            row("gateway", "[red]DOWN[/red]", addrs["gateway"])
    console.print(table)
    if not supervised:
        console.print("no supervisor (started with --no-supervise or by a test harness): crashed components stay down")
