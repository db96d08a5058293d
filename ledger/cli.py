"""The ``ledger`` command."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from .application import Ledger
from .config import Settings, load_environment


@contextmanager
def open_ledger() -> Iterator[Ledger]:
    """A Ledger configured from the environment (and .env), closed afterwards."""
    ledger = Ledger(load_environment())
    try:
        yield ledger
    finally:
        ledger.close()


@click.group()
def main() -> None:
    """Consent and remuneration ledger for participatory research."""


@main.command()
def init() -> None:
    """Create the data directory, keys, database and the pilot study (safe to run twice)."""
    settings = Settings.from_env(load_environment())
    with open_ledger() as ledger:
        created = ledger.init_study(by="cli:init")
    where = "PostgreSQL" if settings.database_url else str(settings.sqlite_path)
    click.echo(f"{'Created' if created else 'Already set up:'} the pilot study in {where}",
               err=True)


@main.command()
def demo() -> None:
    """Add the demo's twelve fictional participants (once)."""
    from .demo import load_demo

    with open_ledger() as ledger:
        ledger.init_study(by="cli:demo")
        loaded = load_demo(ledger)
    click.echo("Added 12 fictional demo participants." if loaded
               else "The demo participants are already loaded.", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
