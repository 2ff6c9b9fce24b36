"""The ``marketplace`` command line (INTERFACES.md). Commands of later issues join this group."""

from __future__ import annotations

import json
import os
import sys

import click


def _settings_path() -> str | None:
    return os.environ.get("MARKETPLACE_SETTINGS") or None


@click.group()
def main() -> None:
    """Marketplace Governance Console."""


def _register_commands() -> None:
    """Attach every command module found in ``webapp.commands`` (each defines ``register``)."""
    import importlib
    import pkgutil

    import webapp.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"webapp.commands.{info.name}")
        module.register(main)


@main.command("governors")
@click.option("--json", "as_json", is_flag=True, help="Every definition as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Every definition as Markdown tables.")
def governors_command(as_json: bool, as_markdown: bool) -> None:
    """Print the eight governor definitions (states, transitions, timers, cascades)."""
    from governors.describe import describe_all, markdown
    from governors.settings import SettingsError, load_settings

    if as_json == as_markdown:
        raise click.UsageError("give exactly one of --json or --markdown")
    try:
        settings = load_settings(_settings_path())
    except (OSError, SettingsError) as exc:
        click.echo(f"settings: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"governors": describe_all(settings)}, indent=2, sort_keys=False, default=str))
    else:
        click.echo(markdown(settings))


_register_commands()
