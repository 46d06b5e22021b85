"""Apps (the tenant boundary) and their API keys (the admin key's commands)."""

from __future__ import annotations

from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console


@command("create-app")
def create_app(app_id: str, name: str = "", data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Create an app (the tenant boundary)."""
    with client(data_dir) as fl:
        created = fl.create_app(app_id, name)
    console.print(f"created app [bold]{created.id}[/bold]")


@command("create-key")
def create_key(app_id: str, name: str = "", data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Issue an API key for an app (needs the admin key). The key is printed once, never again."""
    with client(data_dir) as fl:
        key, secret = fl.create_api_key(app_id, name)
    console.print(f"key [bold]{key.id}[/bold] for app [bold]{app_id}[/bold] (shown once; store it now):")
    print(secret)


@command("list-keys")
def list_keys(app_id: str, include_revoked: bool = False, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """An app's API keys (ids and names, never the secrets; needs the admin key)."""
    with client(data_dir) as fl:
        keys = fl.list_api_keys(app_id, include_revoked)
    table = Table(title=f"API keys of {app_id}")
    for column in ("id", "name", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        revoked = k.revoked_at.ToDatetime().isoformat(timespec="seconds") if k.HasField("revoked_at") else ""
        table.add_row(k.id, k.name, k.created_at.ToDatetime().isoformat(timespec="seconds"), revoked)
    console.print(table)


@command("revoke-key")
def revoke_key(app_id: str, key_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Revoke an API key (needs the admin key)."""
    with client(data_dir) as fl:
        fl.revoke_api_key(app_id, key_id)
    console.print(f"revoked key [bold]{key_id}[/bold] of app [bold]{app_id}[/bold]")
