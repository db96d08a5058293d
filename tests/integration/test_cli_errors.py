"""The ``ledger`` command when something is wrong: one line on stderr and a non-zero exit, never
a traceback; nothing created where no ledger was meant, nothing left half-written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.application import Ledger

LEDGER = str(Path(sys.executable).parent / "ledger")


def _run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    full.update({"LEDGER_DATA_DIR": str(data_dir), **env})
    return subprocess.run([LEDGER, *args], env=full, capture_output=True, text=True,
                          timeout=120, cwd=data_dir.parent)


def _one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return result.stderr


@pytest.fixture
def ready(tmp_path) -> Path:
    data = tmp_path / "data"
    assert _run(data, "init").returncode == 0
    return data


@pytest.mark.parametrize("command", [("verify",), ("report",), ("tokens", "list"),
                                     ("tokens", "revoke", "abc"),
                                     ("tokens", "create", "--role", "staff", "--name", "Mia"),
                                     ("study", "finance-retention", "5"),
                                     ("study", "rate", "workshop", "30.00"),
                                     ("study", "deadline", "analyse", "none")])
def test_a_mistyped_data_directory_is_an_error_not_a_new_ledger(tmp_path, command):
    missing = tmp_path / "mistyped"

    stderr = _one_line_error(_run(missing, *command))

    assert "there is no ledger at" in stderr and "ledger init" in stderr
    assert not missing.exists()


PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize("command", [("verify",), ("report",), ("tokens", "list"),
                                     ("tokens", "create", "--role", "staff", "--name", "Mia"),
                                     ("projections", "rebuild")])
def test_a_mistyped_postgresql_schema_is_an_error_not_a_new_ledger(tmp_path, pg_schema, command):
    """On PostgreSQL `ledger verify` used to create an empty ledger in a mistyped schema (or
    database) and print "OK: 0 events"."""
    import psycopg

    data = tmp_path / "data"
    assert _run(data, "init", LEDGER_DATABASE_URL=f"{PG}?schema={pg_schema}").returncode == 0
    typo = f"{pg_schema}_typo"

    stderr = _one_line_error(_run(data, *command, LEDGER_DATABASE_URL=f"{PG}?schema={typo}"))

    assert "there is no ledger in the PostgreSQL database" in stderr and "ledger init" in stderr
    with psycopg.connect(PG) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.schemata WHERE "
                            "schema_name = %s", (typo,)).fetchone() == (0,)


@pytest.mark.parametrize("variable, value", [
    ("LEDGER_LINK_DAYS", "abc"), ("LEDGER_PROJECTIONS", "bogus"),
    ("LEDGER_DATABASE_URL", "mysql://root@127.0.0.1/test"),
    ("LEDGER_DATABASE_URL", PG + "?schema=a&sslmode=require"),  # TLS would have been dropped
    ("LEDGER_DATABASE_URL", PG + "?sslmode=verify-full"),
    ("LEDGER_DATABASE_URL", PG + "?schema=a&schema=b"),
    ("LEDGER_DATABASE_URL", PG + "?schema=Pilot2027"),  # (the library names it unquoted)
    ("LEDGER_DATABASE_URL", PG + "?schema=ledger-pilot"),
    ("LEDGER_DATABASE_URL", "postgresql://postgres@127.0.0.1:abc/test"),
])
def test_a_bad_setting_is_named_in_one_line(ready, variable, value):
    stderr = _one_line_error(_run(ready, "tokens", "list", **{variable: value}))

    assert variable in stderr and "unexpected" not in stderr
    if "sslmode" in value:
        assert "sslmode" in stderr and "PGSSLMODE" in stderr


@pytest.mark.postgres
def test_libpq_variables_reach_the_ledger_s_connections(pg_schema, tmp_path):
    """The README sends TLS settings to libpq's variables: they are honoured (here, a server
    certificate that cannot be verified against a missing root refuses the connection)."""
    data = tmp_path / "data"
    url = f"{PG}?schema={pg_schema}"

    plain = _run(data, "init", LEDGER_DATABASE_URL=url)
    verified = _run(data, "tokens", "list", LEDGER_DATABASE_URL=url, PGSSLMODE="verify-full",
                    PGSSLROOTCERT=str(tmp_path / "no-such-root.crt"))

    assert plain.returncode == 0, plain.stderr
    assert "PostgreSQL could not be reached or refused the connection" in _one_line_error(verified)
    read_only = _run(data, "tokens", "create", "--role", "staff", "--name", "Read Only",
                     LEDGER_DATABASE_URL=url, PGOPTIONS="-c default_transaction_read_only=on")
    said = _one_line_error(read_only)
    assert "PostgreSQL refused an operation (ReadOnlySqlTransaction)" in said
    assert "could not be reached" not in said and "Read Only" not in said


def test_another_master_key_is_one_line(ready, tmp_path):
    other = tmp_path / "other"
    assert _run(other, "init").returncode == 0
    (ready / "master.key").write_bytes((other / "master.key").read_bytes())

    stderr = _one_line_error(_run(ready, "tokens", "list"))

    assert "master key" in stderr


def test_a_database_that_is_not_one_is_one_line(ready):
    (ready / "ledger.sqlite3").write_bytes(b"not a database " * 500)
    for name in ("ledger.sqlite3-wal", "ledger.sqlite3-shm"):
        (ready / name).unlink(missing_ok=True)

    for command in (("verify",), ("tokens", "list"), ("report",)):
        stderr = _one_line_error(_run(ready, *command))
        assert "could not be read" in stderr, (command, stderr)


def test_a_missing_signing_key_is_an_error_not_a_new_key(ready):
    lg = Ledger({"LEDGER_DATA_DIR": str(ready)})
    lg.merkle.checkpoint()
    lg.close()
    (ready / "signing.key").unlink()

    stderr = _one_line_error(_run(ready, "verify"))

    assert "signing.key is missing" in stderr
    assert not (ready / "signing.key").exists()  # not silently replaced by a new one


@pytest.mark.parametrize("name", ["Ada\tStaff", "Ada\nStaff", "\x1b[31mAda", "Ada\u202eStaff",
                                  "\u200b", "\ufeff", "Ada\u200fStaff", "Ada\u061cStaff",
                                  "Ada\u180eStaff", "Ada\ue000Staff"])
def test_a_token_name_with_control_or_invisible_characters_is_refused(ready, name):
    result = _run(ready, "tokens", "create", "--role", "staff", "--name", name)

    assert result.returncode == 2 and result.stdout == ""
    assert "plain text" in result.stderr
    assert _run(ready, "tokens", "list").stdout == ""


@pytest.mark.parametrize("port", ["0", "-1", "70000"])
def test_serve_refuses_a_port_out_of_range(ready, port):
    result = _run(ready, "serve", "--port", port)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Invalid value for '--port': {port} is not in the range 1<=x<=65535" in result.stderr


@pytest.mark.parametrize("command, message", [
    (("study", "finance-retention", "-5"), "Invalid value for 'DAYS': -5 is not in the range 0<=x<=7300"),
    (("study", "finance-retention", "7301"), "7301 is not in the range 0<=x<=7300"),
    (("study", "rate", "workshop", "-5"), "rate must be more than zero"),
    (("study", "rate", "workshop", "-0.01"), "rate must be more than zero"),
    (("study", "deadline", "analyse", "-3"), "Invalid value for DEADLINE: not an ISO 8601"),
])
def test_a_negative_or_out_of_range_study_setting_is_named_and_changes_nothing(ready, command,
                                                                               message):
    """A negative number reaches the setting's own check (click alone would answer "No such
    option '-5'", which tells a person nothing about what they typed)."""
    before = Ledger({"LEDGER_DATA_DIR": str(ready)})
    try:
        study = before.study()
    finally:
        before.close()

    result = _run(ready, *command)

    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert message in result.stderr and "No such option" not in result.stderr
    after = Ledger({"LEDGER_DATA_DIR": str(ready)})
    try:
        assert after.study() == study
    finally:
        after.close()


def test_a_report_whose_signature_cannot_be_written_leaves_no_report(ready, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.json.sig").mkdir()

    stderr = _one_line_error(_run(ready, "report", "-o", str(out / "r.json")))

    assert "is a directory" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["r.json.sig"]


def test_a_report_is_written_with_its_signature(ready, tmp_path):
    result = _run(ready, "report", "-o", str(tmp_path / "r.json"))

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.json")) == [
        "r.json", "r.json.sig"]


def test_a_backup_of_an_unreadable_database_leaves_nothing(ready, tmp_path):
    with sqlite3.connect(ready / "ledger.sqlite3") as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = (ready / "ledger.sqlite3").stat().st_size
    with open(ready / "ledger.sqlite3", "r+b") as f:  # keep the header, wreck the pages
        f.seek(4096)
        f.write(b"\xff" * (size - 4096))

    stderr = _one_line_error(_run(ready, "backup", str(tmp_path / "b.sqlite3")))

    assert "Traceback" not in stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("b.sqlite3")] == []


def test_a_report_before_the_study_is_set_up_does_not_blame_as_of(tmp_path):
    data = tmp_path / "data"
    Ledger({"LEDGER_DATA_DIR": str(data)}).close()  # a store, and no study in it

    stderr = _one_line_error(_run(data, "report"))

    assert "--as-of" not in stderr


def test_a_rebuild_that_meets_a_changed_event_says_where_and_leaves_the_views(ready):
    """The views are put back as they were; the error names the position, not the data."""
    ledger = Ledger({"LEDGER_DATA_DIR": str(ready), "LEDGER_PROJECTIONS": "external"})
    try:
        pid = ledger.register_participant("Rebuild Probe", by="t")["id"]
        ledger.grant_consent(pid, "take_part", "1.0", "online", by="t")
        last = ledger.projector.catch_up()
        before = ledger.projector.views.all_rows()
        victim = ledger.recorder.select_notifications(start=last, limit=1)[0]
    finally:
        ledger.close()
    with sqlite3.connect(ready / "ledger.sqlite3") as db:
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                   (victim.state[:-1] + bytes([victim.state[-1] ^ 1]), victim.id))

    stderr = _one_line_error(_run(ready, "projections", "rebuild"))

    assert f"the event at position {victim.id} cannot be read" in stderr
    assert f"the views are as they were before it (up to position {last})" in stderr
    assert "Rebuild Probe" not in stderr and str(pid) not in stderr
    ledger = Ledger({"LEDGER_DATA_DIR": str(ready), "LEDGER_PROJECTIONS": "external"})
    try:
        assert ledger.projector.views.position() == last
        assert ledger.projector.views.all_rows() == before
    finally:
        ledger.close()


def test_an_event_the_library_cannot_read_is_described_without_its_message():
    """The library's message quotes the stored event; the one line never does."""
    from eventsourcing.persistence import MapperDeserialisationError

    from ledger.cli import describe

    line = describe(MapperDeserialisationError("state of 'Ada Example' ada@example.invalid"))

    assert line.startswith("a stored event cannot be read: it was changed after it was written")
    assert "Ada" not in line and "example.invalid" not in line


@pytest.mark.parametrize("change", ["flipped", "null"])
def test_the_follower_that_meets_a_changed_event_says_where(store_env, tmp_path, change):
    """``ledger projections run`` (on PostgreSQL the library's subscription, on SQLite polling)
    handed an event that cannot be read stops with one line naming its position, and leaves
    the views where they were."""
    from eventsourcing.persistence import StoredEvent

    external = {**store_env, "LEDGER_PROJECTIONS": "external"}
    ledger = Ledger(external)
    try:
        ledger.init_study(by="t")
        pid = ledger.register_participant("Follower Probe", by="t")["id"]
        ledger.grant_consent(pid, "take_part", "1.0", "online", by="t")
        last = ledger.recorder.select_notifications(
            start=ledger.recorder.max_notification_id(), limit=1)[0]
    finally:
        ledger.close()
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    follower = subprocess.Popen([LEDGER, "projections", "run"], env={**full, **store_env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path)
    ledger = Ledger(external)
    try:
        deadline = time.monotonic() + 60
        while ledger.projector.views.position() < last.id:  # subscribed and caught up
            assert follower.poll() is None and time.monotonic() < deadline, follower.stderr
            time.sleep(0.1)
        ledger.recorder.insert_events([StoredEvent(  # a changed event arrives after that
            originator_id=last.originator_id, originator_version=last.originator_version + 1,
            topic=last.topic, state=last.state[:-1] + bytes([last.state[-1] ^ 1])
            if change == "flipped" else None)])  # (NULL: a TypeError in the library's reading)
        victim = ledger.recorder.max_notification_id()
        try:
            _, stderr = follower.communicate(timeout=60)
        finally:
            follower.kill()

        assert follower.returncode == 1, stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert f"the event at position {victim} cannot be read" in stderr
        assert "Follower Probe" not in stderr and str(pid) not in stderr
        assert ledger.projector.views.position() == last.id
    finally:
        ledger.close()


def test_a_database_opened_without_its_keys_gets_no_new_keys_left_beside_it(store_env,
                                                                            tmp_path):
    """A data directory without its keys (the SQLite file moved without them, or a second host
    on a PostgreSQL database with an empty LEDGER_DATA_DIR): the start is refused, saying the
    key is missing, and no key is left behind. Before, a new master.key and signing.key stayed
    there; with the backed-up master.key put back, the next command signed a checkpoint with
    the new signing.key, and `ledger verify` failed for good even with the right keys back."""
    import shutil

    first = Ledger(store_env)
    first.init_study(by="t")
    first.register_participant("Moved Without Keys", by="t")
    first.merkle.checkpoint()
    first.close()
    home = Path(store_env["LEDGER_DATA_DIR"])
    moved = tmp_path / "moved"
    moved.mkdir()
    url = {k: v for k, v in store_env.items() if k == "LEDGER_DATABASE_URL"}
    if not url:
        for f in home.glob("ledger.sqlite3*"):
            shutil.copy(f, moved / f.name)

    stderr = _one_line_error(_run(moved, "tokens", "list", **url))
    left = sorted(p.name for p in moved.iterdir() if p.suffix == ".key")
    for name in ("master.key", "signing.key"):  # what the message asks for
        shutil.copy(home / name, moved / name)
    again = Ledger({**store_env, "LEDGER_DATA_DIR": str(moved)})
    again.register_participant("After The Keys Came Back", by="t")
    again.merkle.checkpoint()
    again.close()
    verified = _run(moved, "verify", **url)

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert left == []
    assert "holds no master.key" in stderr and "put the backed-up" in stderr


@pytest.mark.postgres
@pytest.mark.parametrize("schema", ["Pilot2027", "ledger-pilot"])
def test_init_with_a_schema_name_the_library_cannot_use_makes_nothing(tmp_path, schema):
    """A capital letter or a hyphen in ?schema= broke `ledger init` half-way (the library names
    the schema unquoted), leaving a schema of 20 tables that every later init failed on."""
    import psycopg

    stderr = _one_line_error(_run(tmp_path / "data", "init",
                                  LEDGER_DATABASE_URL=f"{PG}?schema={schema}"))

    assert "?schema=" in stderr and "lower-case" in stderr
    with psycopg.connect(PG) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.schemata WHERE "
                            "schema_name = %s", (schema,)).fetchone() == (0,)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB filesystem (tmpfs), so that a write fails with "disk full" for real."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(where)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_named_not_blamed_on_the_live_database(ready, small_disk, tmp_path):
    """A backup onto a full disk said the live database "could not be read whole" and to run
    `ledger verify`; a command whose data directory's disk is full said the same. Each now
    says what is full."""
    assert _run(ready, "demo").returncode == 0
    full_copy = _one_line_error(_run(ready, "backup", str(small_disk / "copy.sqlite3")))
    unwritable = _one_line_error(_run(ready, "backup", "/proc/copy.sqlite3"))
    on_small = small_disk / "data"
    made = _run(on_small, "demo")

    assert "no room for the copy" in full_copy and "verify" not in full_copy
    assert list(small_disk.iterdir()) == [] or not (small_disk / "copy.sqlite3").exists()
    assert "could not be read" not in unwritable
    assert made.returncode == 1 and "disk holding the data directory is full" in made.stderr, \
        made.stderr
    assert "Traceback" not in made.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_serve_on_a_port_in_use_says_so_in_one_line_before_anything_starts(ready, host):
    """Not "Serving the ledger on ..." followed by a dozen gunicorn errors over five seconds."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(ready, "serve", "--host", host, "--port", str(port))

    stderr = _one_line_error(result)
    assert f"port {port} on {host} is in use" in stderr and "--port" in stderr
    assert "Serving" not in stderr and "[ERROR]" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_serve_on_an_address_not_of_this_machine_is_named(ready):
    result = _run(ready, "serve", "--host", "192.0.2.1", "--port", "8123")

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'192.0.2.1' is not an address of this machine" in result.stderr


def test_backup_on_postgresql_points_to_pg_dump_as_an_error_not_a_usage_mistake(tmp_path):
    result = _run(tmp_path / "data", "backup", str(tmp_path / "b.sqlite3"),
                  LEDGER_DATABASE_URL=PG + "?schema=ledger_no_such_schema")

    stderr = _one_line_error(result)  # exit 1: the command was typed right
    assert "pg_dump" in stderr and "Usage:" not in stderr
    assert not (tmp_path / "b.sqlite3").exists()


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_serve_on_an_ipv6_address_in_use_is_named_too(ready, host):
    import socket

    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(ready, "serve", "--host", host, "--port", str(port))

    stderr = _one_line_error(result)
    assert f"port {port} on {host} is in use" in stderr


def test_serve_answers_on_an_ipv6_address(ready):
    """gunicorn reads "host:port": an IPv6 address goes in brackets (given bare or not), and the
    links point at it."""
    import socket
    import urllib.request

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    server = subprocess.Popen([LEDGER, "serve", "--host", "::1", "--port", str(port),
                               "--workers", "1"], env={**full, "LEDGER_DATA_DIR": str(ready)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ready.parent)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    server.stderr.read() if server.poll() is not None else "no answer"
                time.sleep(0.3)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert f"Serving the ledger on http://[::1]:{port} " in stderr
    assert f"links will start with http://[::1]:{port}" in stderr


@pytest.mark.parametrize("variable", ["GUNICORN_FD", "LISTEN_FDS"])
def test_a_socket_handed_over_is_not_refused_as_in_use(monkeypatch, variable):
    """gunicorn's USR2 upgrade re-runs the command with the listening socket inherited (its fd in
    GUNICORN_FD), as systemd's socket activation does (LISTEN_FDS): the port is in use, by the
    server itself, and must not be refused."""
    import socket

    import click

    from ledger.cli import _port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(click.ClickException, match="is in use"):
            _port_free("127.0.0.1", port)
        monkeypatch.setenv(variable, "3")
        assert _port_free("127.0.0.1", port) is None


@pytest.mark.parametrize("host", ["::0", "[::]", "0.0.0.0", ""])
def test_links_from_a_server_on_every_address_point_at_one_a_browser_can_reach(ready, host):
    """A wildcard address (any spelling) names no host: without LEDGER_BASE_URL the links use
    127.0.0.1, and say so."""
    import socket

    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::", 0))
        port = probe.getsockname()[1]
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    server = subprocess.Popen([LEDGER, "serve", "--host", host, "--port", str(port),
                               "--workers", "1"], env={**full, "LEDGER_DATA_DIR": str(ready)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ready.parent)
    try:
        assert server.stderr is not None
        lines = [server.stderr.readline() for _ in range(2)]
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert f"links will start with http://127.0.0.1:{port}." in "".join(lines), lines
    assert f"Serving the ledger on http://:{port}" not in lines[0], lines  # (the empty host)


@pytest.mark.parametrize("damage", ["empty master.key", "short master.key",
                                    "master.key not base64", "signing.key garbage"])
@pytest.mark.parametrize("command", [("verify",), ("report",), ("restore", "BACKUP")])
def test_a_damaged_key_file_is_named_and_nothing_changes(ready, tmp_path, damage, command):
    """Before, each said only "unexpected ValueError; run again with LEDGER_DEBUG=1": nothing
    pointed at the key file to put back."""
    backup = tmp_path / "b.sqlite3"
    assert _run(ready, "backup", str(backup)).returncode == 0
    name, content = {"empty master.key": ("master.key", b""),
                     "short master.key": ("master.key", b"c2hvcnQ=\n"),
                     "master.key not base64": ("master.key", b"not a key at all!\n"),
                     "signing.key garbage": ("signing.key", b"-----BEGIN nonsense\n")}[damage]
    (ready / name).write_bytes(content)
    before = {p.name: p.read_bytes() for p in ready.iterdir() if p.is_file()}

    result = _run(ready, *[str(backup) if a == "BACKUP" else a for a in command])

    message = _one_line_error(result)
    assert name in message and "put the backed-up" in message, message
    assert "unexpected" not in message and "Traceback" not in result.stderr
    # (SQLite's own -wal and -shm files may come and go as the database is opened and closed)
    assert {p.name: p.read_bytes() for p in ready.iterdir() if p.is_file()
            and not p.name.endswith(("-shm", "-wal"))} == {
        k: v for k, v in before.items() if not k.endswith(("-shm", "-wal"))}


def test_a_restore_onto_a_full_disk_says_so_and_changes_nothing(ready, small_disk, tmp_path):
    """The copy of the backup going in beside the database fills the disk: that is said, not
    that the backup "could not be copied whole" (a review found it blamed on the backup)."""
    import shutil

    assert _run(ready, "demo").returncode == 0
    backup = tmp_path / "b.sqlite3"
    assert _run(ready, "backup", str(backup)).returncode == 0
    assert backup.stat().st_size > 300 * 1024  # (more than the small disk holds)
    data = small_disk / "data"
    data.mkdir(mode=0o700)
    for key in ("master.key", "signing.key"):
        shutil.copy2(ready / key, data / key)

    message = _one_line_error(_run(data, "restore", str(backup)))

    assert "no room for the copy" in message and str(backup) not in message, message
    assert sorted(p.name for p in data.iterdir() if not p.name.endswith(".lock")) == [
        "master.key", "signing.key"]  # (the copy removed; only the restore's lock file left)
