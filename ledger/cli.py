"""The ``ledger`` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .application import Ledger
from .config import Settings, load_environment
from .domain.study import MAX_RETENTION
from .privacy.tokens import ROLES
from .reports import DEFAULT_OUTSTANDING_DAYS
from .reports.render import CSV_SECTIONS, FORMATS


@contextmanager
def open_ledger(*, create: bool = False, **overrides: str) -> Iterator[Ledger]:
    """A Ledger configured from the environment (and .env), closed afterwards. Unless
    ``create``, one must exist where the settings point (SQLite: the database file), so a
    mistyped LEDGER_DATA_DIR is an error, not an empty ledger created on the spot."""
    env = {**load_environment(), **overrides}
    settings = Settings.from_env(env)
    if not settings.database_url:
        from .backup import finish_interrupted_restore

        finish_interrupted_restore(settings.sqlite_path)  # (it may have moved the database)
    if not create and not settings.database_url and not settings.sqlite_path.exists():
        raise click.ClickException(f"there is no ledger at {settings.sqlite_path}: check "
                                   "LEDGER_DATA_DIR, or run `ledger init` to create one")
    if not create and settings.database_url:
        from .store import postgres_env, postgres_ledger_exists

        if not postgres_ledger_exists(postgres_env(settings.database_url)):
            raise click.ClickException("there is no ledger in the PostgreSQL database and schema "
                                       "LEDGER_DATABASE_URL names: check it, or run `ledger "
                                       "init` to create one")
    ledger = Ledger(env)
    try:
        yield ledger
    finally:
        ledger.close()


def describe(error: Exception) -> str:
    """One line for an error no command handled: ours say what is wrong in words written for
    this (never personal data); any other is named by kind, with where to look."""
    import sqlite3

    from eventsourcing.persistence import MapperDeserialisationError, PersistenceError

    from .application import ConfigurationError
    from .backup import BackupError
    from .config import SettingsError
    from .demo import DemoInterrupted, DemoRefused
    from .domain.errors import LedgerError
    from .privacy.keys import KeyFileUnreadable
    from .projections.projector import RebuildRunning, UnreadableEvent

    if isinstance(error, ConfigurationError | SettingsError | BackupError | LedgerError
                  | UnreadableEvent | DemoInterrupted | DemoRefused | RebuildRunning
                  | KeyFileUnreadable):
        return str(error)
    if isinstance(error, MapperDeserialisationError):  # (its message could quote the event)
        return str(UnreadableEvent(None))
    import psycopg

    if isinstance(error, psycopg.OperationalError):
        return (f"PostgreSQL could not be reached or refused the connection "
                f"({type(error).__name__}): check LEDGER_DATABASE_URL, and libpq's PG* variables "
                "(PGSSLMODE, ...) if any are set")
    if isinstance(error, psycopg.Error):  # (its message can quote values)
        return (f"PostgreSQL refused an operation ({type(error).__name__}): check that the "
                "database is writable and the user may use the schema")
    if _disk_full(error):
        return ("the disk holding the data directory is full: free some space and run the "
                "command again (a write that could not be made was not kept)")
    if isinstance(error, sqlite3.DatabaseError | PersistenceError):
        return (f"the database could not be read ({type(error).__name__}): check "
                "LEDGER_DATA_DIR or LEDGER_DATABASE_URL, and run `ledger verify`")
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or type(error).__name__}{where}"
    return (f"unexpected {type(error).__name__}; run again with LEDGER_DEBUG=1 to see where "
            "(the traceback may show stored values)")


def _disk_full(error: BaseException | None) -> bool:
    """Whether SQLite said the disk is full, here or in what caused this error."""
    import sqlite3

    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, sqlite3.Error) and \
                getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


class LedgerGroup(click.Group):
    """The command group: an error a command did not handle ends it with one line on stderr and
    exit status 1, not a traceback (which can quote stored values). LEDGER_DEBUG=1 shows it."""

    def invoke(self, ctx: click.Context) -> Any:
        import os

        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if os.environ.get("LEDGER_DEBUG") == "1":
                raise
            raise click.ClickException(describe(error)) from None


@click.group(cls=LedgerGroup)
def main() -> None:
    """Consent and remuneration ledger for participatory research."""


@main.command(short_help="Create the data directory, keys, database and pilot study.")
def init() -> None:
    """Create the data directory, keys, database and the pilot study (safe to run twice)."""
    settings = Settings.from_env(load_environment())
    with open_ledger(create=True) as ledger:
        created = ledger.init_study(by="cli:init")
    where = "PostgreSQL" if settings.database_url else str(settings.sqlite_path)
    click.echo(f"{'Created' if created else 'Already set up:'} the pilot study in {where}",
               err=True)


@main.command()
def demo() -> None:
    """Add the demo's twelve fictional participants (once)."""
    from .demo import load_demo

    with open_ledger(create=True) as ledger:
        ledger.init_study(by="cli:demo")
        loaded = load_demo(ledger)
    click.echo("Added 12 fictional demo participants." if loaded
               else "The demo participants are already loaded.", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (0.0.0.0: every address of this machine).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="The port to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (about one per core).")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker process (8 gains throughput under bursts of writes, "
                   "which then share commits, but doubles the p99 under a mix of reads).")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the service under a production WSGI server (gunicorn)."""
    from .api.server import serve as run

    settings = Settings.from_env(load_environment())
    host = host.strip() or "0.0.0.0"  # gunicorn reads an empty host as every IPv4 address
    _port_free(host, port)
    with open_ledger(create=True) as ledger:
        ledger.init_study(by="cli:serve")  # tables and study exist before workers start
    store = "PostgreSQL" if settings.database_url else str(settings.sqlite_path)
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    click.echo(f"Serving the ledger on http://{shown}:{port} ({store}); API docs at "
               f"http://{shown}:{port}/api/v1/docs", err=True)
    if not load_environment().get("LEDGER_BASE_URL"):
        # Links then point at this server as started (on another --port too), for the workers
        # it forks; a wildcard address names no host a browser can reach, so 127.0.0.1 stands.
        import ipaddress

        plain = host.strip("[]")
        try:
            wildcard = plain == "" or ipaddress.ip_address(plain).is_unspecified
        except ValueError:
            wildcard = False  # (a name)
        reachable = "127.0.0.1" if wildcard else plain
        base = f"http://{f'[{reachable}]' if ':' in reachable else reachable}:{port}"
        os.environ["LEDGER_BASE_URL"] = base
        click.echo(f"LEDGER_BASE_URL is not set: participants' withdrawal links will start with "
                   f"{base}. Set it to the address people reach this service at.", err=True)
    run(host, port, workers, threads)


def _port_free(host: str, port: int) -> None:
    """Refuse, in one line, a port another program listens on: gunicorn would print a dozen
    errors over five seconds after "Serving the ledger on ..." (the socket is opened as
    gunicorn opens it, so a port only in TIME_WAIT stays usable)."""
    import errno
    import socket

    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return  # a socket handed over (gunicorn's USR2 upgrade, systemd): already ours
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise click.BadParameter(f"{host!r} is not an address of this machine",
                                 param_hint="--host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is in use (another `ledger serve`, or another "
                    f"program): stop it, or choose another with --port") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise click.BadParameter(f"{host!r} is not an address of this machine",
                                         param_hint="--host") from None
            raise click.ClickException(f"cannot listen on {host}:{port} "
                                       f"({e.strerror or type(e).__name__})") from None


@main.group()
def tokens() -> None:
    """API tokens for staff, auditors and admins."""


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--name", required=True, help="Who the token is for (kept in the token list).")
def tokens_create(role: str, name: str) -> None:
    """Print a new token (only the token, on stdout). It is shown once and stored as a hash."""
    with open_ledger() as ledger:  # (a token made in a mistyped place would only get 401s)
        try:
            info, token = ledger.tokens.create(role, name)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--name") from None
    click.echo(token)
    click.echo(f"Token {info.id} for {role} created. It will not be shown again.", err=True)


@tokens.command("list")
def tokens_list() -> None:
    """List tokens (id, role, name, created, revoked); never the tokens themselves."""
    with open_ledger() as ledger:
        for t in ledger.tokens.list():
            click.echo(f"{t.id}\t{t.role}\t{t.name}\t{t.created_at}\t{t.revoked_at or '-'}")


@tokens.command("revoke")
@click.argument("token_id")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token by its id (from `ledger tokens list`)."""
    with open_ledger() as ledger:
        if not ledger.tokens.revoke(token_id):
            raise click.ClickException("no live token with that id")
    click.echo(f"Revoked {token_id}.", err=True)


@main.command(short_help="The compliance report (as the API gives it).")
@click.option("--as-of", "as_of", default=None, metavar="T",
              help="The moment, ISO 8601 with offset (default: now).")
@click.option("--format", "fmt", default="json", show_default=True,
              type=click.Choice(list(FORMATS)))
@click.option("--outstanding-days", default=DEFAULT_OUTSTANDING_DAYS, show_default=True,
              type=click.IntRange(0, 3650),
              help="List payments agreed this many days ago and not yet made.")
@click.option("--section", default=None, type=click.Choice(list(CSV_SECTIONS)),
              help="With --format csv: that one section's CSV file, not the zip of them all.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE (default: standard output).")
def report(as_of: str | None, fmt: str, outstanding_days: int, section: str | None,
           output: str | None) -> None:
    """The compliance report (the same as GET /api/v1/reports/compliance)."""
    from datetime import datetime

    from .domain.errors import LedgerError
    from .reports import report_data, sign_report
    from .reports.render import render

    if section is not None and fmt != "csv":
        raise click.BadParameter("a section is one CSV file: use it with --format csv",
                                 param_hint="--section")
    moment = None
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            raise click.BadParameter("not an ISO 8601 date and time", param_hint="--as-of") from None
    with open_ledger() as ledger:
        if moment is None and ledger.settings.projections == "external":
            # A command can bring the views up to date itself, as `ledger projections run`
            # does (safely beside it): the current report need not wait for the follower.
            ledger.projector.catch_up()
        try:
            data = render(report_data(ledger, moment, outstanding_days), fmt, section)
        except LedgerError as e:
            if e.field is None:  # not about an option (e.g. no study set up yet)
                raise click.ClickException(e.message) from None
            raise click.BadParameter(e.message, param_hint=f"--{e.field.replace('_', '-')}"
                                     ) from None
        signature = sign_report(ledger, data)
    if output:
        write_report(Path(output), data, signature)
        what = (f"report's {section} section (CSV)" if section else
                "csv report (a zip of one CSV file per section)" if fmt == "csv" else
                f"{fmt} report")
        click.echo(f"Wrote the {what} to {output}, and its signature (Ed25519, base64, "
                   f"over the file's bytes) to {output}.sig.", err=True)
    else:
        sys.stdout.buffer.write(data)
        click.echo(f"Signature (Ed25519, base64, over the bytes written): {signature}", err=True)


def write_report(output: Path, data: bytes, signature: str) -> None:
    """The report and its signature, each written whole to a temporary name first: a failure
    leaves neither half-written, nor a report without its signature."""
    import os

    sig = output.with_name(output.name + ".sig")
    for path in (output, sig):
        if path.is_dir():
            raise click.ClickException(f"{path} is a directory")
    written = []
    try:
        for path, content in ((output, data), (sig, (signature + "\n").encode())):
            temporary = path.with_name(f"{path.name}.partial-{os.getpid()}")
            written.append(temporary)
            # 0600, as backups are: a report is pseudonymous, but says who took part in a study
            # about racism and what they agreed to
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                      "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        os.replace(written[0], output)
        os.replace(written[1], sig)
    finally:
        for temporary in written:
            temporary.unlink(missing_ok=True)


def _checkpoint_shaped(cp: Any) -> bool:
    """Whether ``cp`` has a checkpoint's shape: a size (a whole number, not negative), a root
    (SHA-256, hex), a time (ISO 8601), a signature (base64) and optionally a public key. A file
    that is plainly not one is refused before the log is read: before, it was checked, failed,
    and recorded as the ledger's last verification, which every report then showed failed."""
    import base64
    import binascii
    import re
    from datetime import datetime

    if not (isinstance(cp, dict) and type(cp.get("size")) is int and cp["size"] >= 0
            and all(isinstance(cp.get(k), str) for k in ("root", "time", "signature"))
            and isinstance(cp.get("public_key", ""), str)
            and re.fullmatch(r"[0-9a-f]{64}", cp["root"])):
        return False
    try:
        datetime.fromisoformat(cp["time"])
        base64.b64decode(cp["signature"], validate=True)
    except (ValueError, binascii.Error):
        return False
    return True


def _refuse_kept(sizes: list[int], problem: str, meaning: str) -> None:
    """Stop (exit 1) if any kept checkpoint, by size, cannot be held against this log."""
    if not sizes:
        return
    for size in sizes:
        click.echo(f"  - kept checkpoint at size {size}: {problem}", err=True)
    click.echo(f"FAILED: a kept checkpoint {meaning}. The log was not checked against it, and "
               "this is not recorded as a verification.", err=True)
    sys.exit(1)


def _same_key(a: str, b: str) -> bool:
    """Whether two PEM public keys are the same key (however the PEM is laid out)."""
    from cryptography.hazmat.primitives import serialization

    from .audit.checkpoints import load_public_key

    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    return load_public_key(a).public_bytes(*raw) == load_public_key(b).public_bytes(*raw)


def _signed_by_its_key(cp: dict[str, Any]) -> bool:
    from .audit.checkpoints import check_signature, checkpoint_message, load_public_key

    try:
        key = load_public_key(cp["public_key"])
    except (ValueError, TypeError):
        return False
    return check_signature(key, checkpoint_message(cp["size"], cp["root"], cp["time"]),
                           cp["signature"])


@main.command(short_help="Check the record was not altered (exit 1 if it was).")
@click.option("--public-key", "show_key", is_flag=True,
              help="Print the public key that checks the signatures (PEM) and stop.")
@click.option("--checkpoint", "kept", type=click.File("r"), multiple=True,
              help="A checkpoint kept outside the system (the JSON of GET /audit/checkpoint, or "
                   "a JSON report, which carries its own) to hold the log against too; may be "
                   "given more than once.")
@click.option("--views", "check_views", is_flag=True,
              help="Also hold the views (what the current report and the staff list read) "
                   "against a replay of the log: exit 1 if any table differs. Replays the whole "
                   "log in memory: 5 to 6 times as long as the log's check, and about 650 MiB "
                   "for 200,000 events (bench/verify.py).")
def verify(show_key: bool, kept: tuple[Any, ...], check_views: bool) -> None:
    """Recompute the Merkle root over the whole log and hold it against the recorded leaves and
    every signed checkpoint; exit 1 naming the first bad position on any mismatch."""
    import json

    from .audit.checkpoints import verify as verify_log

    try:
        outside = [json.load(f) for f in kept]
        # A signed report's JSON carries the checkpoint it was built on (without the key).
        outside = [cp["checkpoint"] if isinstance(cp, dict) and "size" not in cp
                   and isinstance(cp.get("checkpoint"), dict) else cp for cp in outside]
        for cp in outside:
            if not _checkpoint_shaped(cp):
                raise ValueError
    except ValueError:
        raise click.BadParameter("each must be the JSON of GET /audit/checkpoint (size, root, "
                                 "time, signature and public_key) or of a JSON report",
                                 param_hint="--checkpoint") from None
    with open_ledger(LEDGER_PROJECTIONS="external") as ledger:
        if show_key:
            click.echo(ledger.merkle.public_key, nl=False)
            return
        for cp in outside:  # (a report's: checked with this ledger's key, as stored ones are)
            cp.setdefault("public_key", ledger.merkle.public_key)
        # A kept checkpoint that cannot be held against this log says nothing of it: said, and
        # not recorded as the ledger's verification (a sound log would show failed in every
        # report). First one no key signed; then one signed with another key than this
        # ledger's (another ledger's, or this one's key replaced since, and every stored
        # checkpoint re-signed to pass).
        _refuse_kept([cp["size"] for cp in outside if not _signed_by_its_key(cp)],
                     "signature does not match its key",
                     "is not signed by the key it names (or, with none, by this ledger's): the "
                     "file was changed after it was kept, or it is not a checkpoint")
        _refuse_kept([cp["size"] for cp in outside
                      if not _same_key(cp["public_key"], ledger.merkle.public_key)],
                     "signed with another key than this ledger's",
                     "was signed with another key than this ledger's (`ledger verify "
                     "--public-key` prints it): it is another ledger's, or this ledger's "
                     "signing key was replaced since you kept it, which needs looking into")
        verdict = verify_log(ledger.merkle, outside)
        ledger.merkle.record_verification(verdict)  # reports show the last outcome
        differ: dict[str, tuple[int, int]] = {}
        if check_views and verdict.ok:
            position, differ = ledger.projector.differences_from_log()
    if verdict.ok and differ:
        click.echo(f"FAILED: the log holds ({verdict.size} events, root {verdict.root}), but the "
                   f"views differ from a replay of its first {position} events, so a current "
                   "report or the staff list may be wrong:", err=True)
        for name, (extra, missing) in differ.items():
            if name == "position":
                click.echo(f"  - the views say they hold the log's first {extra} events, but "
                           f"it has {missing}: what is written next would not show", err=True)
                continue
            click.echo(f"  - {name}: {extra} row(s) not from the log, {missing} row(s) of the "
                       "log missing", err=True)
        if "participant documents" in differ:
            click.echo("(Documents an earlier release wrote, before an upgrade that changed what "
                       "a record shows, differ too: after such an upgrade, rebuild the views.)",
                       err=True)
        click.echo("`ledger projections rebuild` builds them again from the log; past reports "
                   "(--as-of) are replayed from the log and are not affected.", err=True)
        sys.exit(1)
    if verdict.ok:
        click.echo(f"OK: {verdict.size} events, root {verdict.root}, "
                   f"{verdict.checkpoints} signed checkpoints hold."
                   + (" The views agree with the log." if check_views else ""))
        if verdict.signed_up_to < verdict.size:
            first = verdict.signed_up_to + 1
            click.echo(f"Not yet under a signed checkpoint: events {first} to {verdict.size} "
                       f"(a change made there together with the recorded hashes would not "
                       f"show). A running service signs one within seconds of a write.",
                       err=True)
        return
    where = ("a signed checkpoint does not hold" if verdict.first_bad_position is None
             else f"first bad position {verdict.first_bad_position}")
    click.echo(f"FAILED: {where} (of {verdict.size} events in the log).", err=True)
    for problem in verdict.problems[:20]:
        click.echo(f"  - {problem}", err=True)
    sys.exit(1)


@main.command(short_help="Copy the SQLite database while the service runs.")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
def backup(destination: Path) -> None:
    """Copy the SQLite database to DESTINATION while the service runs: one consistent
    snapshot, integrity-checked. Back up master.key and signing.key separately. (PostgreSQL:
    use pg_dump; see the README.)"""
    from .backup import BackupError, backup_sqlite

    settings = Settings.from_env(load_environment())
    if settings.database_url:  # (not a usage error: exit 1, not 2)
        raise click.ClickException("the ledger is on PostgreSQL: back it up with pg_dump "
                                   "(see the README's Backup section)")
    try:
        events = backup_sqlite(settings.sqlite_path, destination)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Backed up {events} events to {destination}.", err=True)


@main.command(short_help="Put a backup in place of the SQLite database.")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore(source: Path) -> None:
    """Put a backup made by `ledger backup` in place of the SQLite database (refused while the
    service runs). The database it replaces is kept beside it, renamed. The master key in the
    data directory must be the one the backup was made with, and the restored log must verify;
    otherwise the previous database is put back."""
    from .application import ConfigurationError
    from .audit.checkpoints import verify as verify_log
    from .backup import BackupError, recorded_in_kept, restoring
    from .domain.base import topic
    from .privacy.keys import MASTER_KEY_FILE

    settings = Settings.from_env(load_environment())
    if settings.database_url:
        raise click.UsageError("the ledger is on PostgreSQL: restore with pg_restore "
                               "(see the README's Backup section)")
    if not (settings.data_dir / MASTER_KEY_FILE).exists():  # a new one could never open it
        raise click.ClickException(
            f"there is no {MASTER_KEY_FILE} in {settings.data_dir}: put the backed-up keys "
            f"({MASTER_KEY_FILE} and signing.key) there first; nothing was changed")

    class Failed(Exception):
        """The copy failed verification: put the previous database back."""

    repeated, refused, unread, only_kept = 0, list[str](), 0, 0
    back = ("the previous database was put back" if settings.sqlite_path.exists() else
            "the copy was taken out again (there was no database before)")
    try:
        # No other process can open the database until all of this is done: the copy is
        # verified, and the erasures it would undo are repeated, before anyone reads it.
        with restoring(source, settings.sqlite_path) as (events, kept):
            # Not reaching into the kept databases until the copy has verified: an altered
            # copy must not change the database that would be put back.
            ledger = Ledger({**load_environment(), "LEDGER_PROJECTIONS": "external"},
                            shred_kept=False)
            try:
                verdict = verify_log(ledger.merkle)
                if not verdict.ok:  # a damaged or altered copy never becomes the record
                    raise Failed()
                ledger.merkle.record_verification(verdict)
                # An erasure must not be undone by a restore: whoever any database a restore
                # kept recorded as erased (the one just replaced, and earlier ones: a person
                # erased after an older backup) is erased again here.
                erased, registered, unread = recorded_in_kept(
                    settings.sqlite_path, ledger.recorder.events_table_name,  # type: ignore[attr-defined]
                    topic("Participant.Erased"), topic("Participant.Registered"))
                repeated, refused = ledger.repeat_erasures(sorted(erased), by="cli:restore")
                only_kept = len(registered - erased - set(ledger.participant_ids()))
                ledger.shred_kept = True
                ledger.finish_erasures()  # every erased person's key, from every kept database
            finally:
                ledger.close()
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    except ConfigurationError as e:
        raise click.ClickException(f"{e}; {back}") from None
    except Failed:
        click.echo(f"The backup's {events} events failed verification: "
                   f"{'; '.join(verdict.problems[:3])}. {back[0].upper()}{back[1:]}; "
                   "nothing was changed.", err=True)
        sys.exit(1)
    except (Exception, KeyboardInterrupt) as error:
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else describe(error)
        raise click.ClickException(f"{why}. The restore stopped; {back}, and nothing was "
                                   "changed") from None
    if kept is not None:
        click.echo(f"The replaced database was kept as {kept}.", err=True)
    click.echo(f"Restored {events} events; verified: root {verdict.root}.", err=True)
    if repeated:
        click.echo(f"Erased {repeated} participant(s) again: a replaced database recorded "
                   "their erasure after this backup was taken.", err=True)
    if only_kept:
        click.echo(f"Warning: {only_kept} participant(s) registered after this backup was taken "
                   "are only in a replaced database, out of reach of the API (and of erasure "
                   "requests): register them again from your records, and delete the kept file "
                   "once nothing in it is needed.", err=True)
    if unread:
        click.echo("Warning: a replaced database could not be read whole, so erasures recorded "
                   "only there may not have been repeated: repeat any made after this backup "
                   "was taken (their erasure receipts name each person's reference).", err=True)
    if refused:
        click.echo(f"Could not erase {len(refused)} participant(s) again, whom a replaced "
                   f"database recorded as erased: {'; '.join(refused)}. Erase them when "
                   "allowed.", err=True)
    if refused or unread:
        sys.exit(1)


@main.group()
def study() -> None:
    """The study's settings."""


# So "-5" reaches the argument and gets its own error ("-5 is not in the range 0<=x<=7300", "the
# amount must be...") rather than click's "No such option '-5'".
NUMBERS_MAY_BE_NEGATIVE = {"ignore_unknown_options": True}


@study.command("finance-retention", context_settings=NUMBERS_MAY_BE_NEGATIVE,
               short_help="Keep payment records naming the payee for DAYS.")
@click.argument("days", type=click.IntRange(0, MAX_RETENTION))
def study_finance_retention(days: int) -> None:
    """Keep payment records naming the payee for DAYS after each payment (e.g. 2190, six
    years); erasing a person is refused until then. 0: payments stay as anonymous facts."""
    with open_ledger() as ledger:
        ledger.set_finance_retention(days, by="cli:study")
    click.echo(f"Finance retention: {days} days after a payment.", err=True)


@study.command("form", short_help="Register consent form VERSION with its text.")
@click.argument("version")
@click.argument("text_file", type=click.Path(exists=True, dir_okay=False))
def study_form(version: str, text_file: str) -> None:
    """Register consent form VERSION (e.g. 1.1) with its full text, read from TEXT_FILE
    (UTF-8); it becomes the current version, and its SHA-256 is what grants are checked
    against. A version is registered once."""
    try:
        text = Path(text_file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter("not UTF-8 text", param_hint="TEXT_FILE") from None
    with open_ledger() as ledger:
        sha256 = ledger.register_form(version, text, by="cli:study")
    click.echo(f"Registered consent form {version}, now the current version "
               f"(SHA-256 {sha256}).", err=True)


@study.command("deadline", context_settings=NUMBERS_MAY_BE_NEGATIVE,
               short_help="Set SCOPE's withdrawal deadline (later ones are flagged).")
@click.argument("scope")
@click.argument("moment", metavar="DEADLINE")
def study_deadline(scope: str, moment: str) -> None:
    """Set SCOPE's withdrawal DEADLINE (ISO 8601 with offset, e.g. 2027-03-01T00:00:00+00:00),
    after which a withdrawal is still recorded, flagged as past the deadline; `none` clears
    it."""
    from datetime import datetime

    deadline = None
    if moment.lower() != "none":
        try:
            deadline = datetime.fromisoformat(moment)
        except ValueError:
            raise click.BadParameter("not an ISO 8601 date and time (or `none`)",
                                     param_hint="DEADLINE") from None
    with open_ledger() as ledger:
        ledger.set_withdrawal_deadline(scope, deadline, by="cli:study")
    click.echo(f"Withdrawal deadline for {scope}: "
               f"{deadline.isoformat() if deadline else 'none'}.", err=True)


@study.command("rate", context_settings=NUMBERS_MAY_BE_NEGATIVE,
               short_help="Set ACTIVITY's standard rate in pounds.")
@click.argument("activity")
@click.argument("amount")
def study_rate(activity: str, amount: str) -> None:
    """Set ACTIVITY's standard rate to AMOUNT in pounds (e.g. 25.00): payments of another
    amount then need a reason, and reports hold payments against it."""
    with open_ledger() as ledger:
        ledger.set_rate(activity, amount, by="cli:study")
        rate = next(a["rate"] for a in ledger.study()["activities"] if a["name"] == activity)
    click.echo(f"Rate for {activity}: £{rate}.", err=True)


@main.group(short_help="The views the staff list and current report read.")
def projections() -> None:
    """The views: tables built from the log, which the staff list and the current report
    read. Rebuild them, or keep them up to date from a process of their own."""


@projections.command("rebuild")
@click.option("--page-size", type=click.IntRange(1, 100_000), default=20_000, show_default=True,
              help="Events applied per transaction (larger: faster, more memory).")
@click.option("--workers", type=click.Choice(["1", "2", "4"]), default=None,
              help="Processes that share the work [default: one per core, up to 4, once the "
                   "log has 20,000 events].")
def projections_rebuild(page_size: int, workers: str | None) -> None:
    """Empty every view and rebuild it from the log, with a progress bar; if it cannot finish,
    the views are put back as they were."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with open_ledger(LEDGER_PROJECTIONS="external") as ledger:
        total = ledger.recorder.max_notification_id() or 0
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), transient=False,
                      console=Console(stderr=True)) as bar:
            task = bar.add_task("Rebuilding the views", total=total)
            try:
                position = ledger.projector.rebuild(progress=lambda n: bar.advance(task, n),
                                                    page_size=page_size,
                                                    workers=int(workers) if workers else None)
            except (Exception, KeyboardInterrupt) as error:
                put_back = ledger.projector.put_back_at
                if put_back is None:
                    raise
                why = ("interrupted" if isinstance(error, KeyboardInterrupt)
                       else describe(error))
                raise click.ClickException(
                    f"{why}. The rebuild stopped; the views are as they were before it (up to "
                    f"position {put_back}).") from None
            bar.update(task, completed=total)
    click.echo(f"Rebuilt the views up to position {position}.", err=True)


@projections.command("run")
@click.option("--until-idle", is_flag=True, help="Stop once the views have caught up (tests).")
def projections_run(until_idle: bool) -> None:
    """Follow the log and keep the views up to date (with LEDGER_PROJECTIONS=external)."""
    from .projections.runner import run_views

    run_views(load_environment(), until_idle=until_idle)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
