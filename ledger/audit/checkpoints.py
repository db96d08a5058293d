"""Signed checkpoints of the event log, and the check that the log still matches them.

``MerkleLog`` keeps, next to the events, the hash of every stored event in log order (the leaves)
and the compact state of the tree over them, so a new root costs only the new events. Leaves and
their tracking row are written in one transaction guarded by the size they were computed from, as
the views are: any number of processes may extend them, each event is hashed once.

A checkpoint is ``{size, root, time}`` signed with the data directory's Ed25519 key. The signed
bytes are the checkpoint as compact JSON with sorted keys (``checkpoint_message``), so anyone with
the public key and the ``cryptography`` package can check a copy kept outside the system.

``verify`` trusts nothing stored beside the events: it recomputes every leaf from the events,
compares each with the leaf recorded when the event was first seen (which names the exact first
position that changed), and each signed checkpoint's root with the recomputed root at its size.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..domain.errors import InvalidInput
from ..privacy.keys import KeyFileUnreadable
from ..store import Sql, UnreadableEvent
from .merkle import RootBuilder, consistency_proof, inclusion_proof, leaf_bytes, leaf_hash
from .merkle import root as merkle_root

LEAVES, TRACKING, CHECKPOINTS = "ledger_merkle_leaves", "ledger_merkle_tracking", "ledger_checkpoints"
VERIFICATIONS = "ledger_verifications"
PAGE = 5_000
NAME = "log"


class Stale(Exception):
    """Another process extended the leaves meanwhile."""


def checkpoint_message(size: int, root: str, time: str) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return json.dumps({"root": root, "size": size, "time": time}, sort_keys=True,
                      separators=(",", ":")).encode()


def verification_message(at: str, size: int, root: str, ok: bool,
                         first_bad_position: int | None) -> bytes:
    """The exact bytes a recorded verification's signature covers (``record`` keeps it from
    ever reading as another kind of signed message)."""
    return json.dumps({"record": "verification", "at": at, "size": size, "root": root, "ok": ok,
                       "first_bad_position": first_bad_position}, sort_keys=True,
                      separators=(",", ":")).encode()


def signed_json(body: dict[str, Any]) -> bytes:
    """The bytes a signed JSON document's signature covers: the document without its
    ``signature``, as compact JSON with sorted keys."""
    return json.dumps({k: v for k, v in body.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()


def public_key_pem(private: Ed25519PrivateKey) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(public_pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def check_signature(key: Ed25519PublicKey, message: bytes, signature_b64: str) -> bool:
    """Does ``signature_b64`` sign ``message`` under ``key``?"""
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def _leaf(n: Any) -> bytes:
    return leaf_hash(leaf_bytes(n.originator_id, n.originator_version, n.topic, n.state))


class MerkleLog:
    """The leaves, the tree's compact state, and the signed checkpoints."""

    def __init__(self, sql: Sql, recorder: Any, signing_key_path: Path,
                 clock: Callable[[], datetime]) -> None:
        self.sql, self.recorder, self.clock = sql, recorder, clock
        pem = signing_key_path.read_bytes()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileUnreadable(
                f"{signing_key_path} is not the ledger's signing key (an Ed25519 private key, "
                f"PEM, as `ledger init` wrote it): it is damaged or another file; put the "
                f"backed-up {signing_key_path.name} back")
        self._key = key
        self.public_key = public_key_pem(key)
        self.create()

    def create(self) -> None:
        with self.sql.transaction(lock_first=True) as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{LEAVES} (idx BIGINT PRIMARY KEY, "
                      "notification_id BIGINT NOT NULL, hash TEXT NOT NULL)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{TRACKING} (name TEXT PRIMARY KEY, "
                      "size BIGINT NOT NULL, last_id BIGINT NOT NULL, stack TEXT NOT NULL)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{CHECKPOINTS} (size BIGINT PRIMARY KEY, "
                      "root TEXT NOT NULL, time TEXT NOT NULL, signature TEXT NOT NULL)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{VERIFICATIONS} (at TEXT NOT NULL, "
                      "size BIGINT NOT NULL, root TEXT NOT NULL, ok INTEGER NOT NULL, "
                      "first_bad_position BIGINT, signature TEXT)")
            if "signature" not in self.sql.columns(VERIFICATIONS, c):  # made before 5 Dec 2026
                c.execute(f"ALTER TABLE {{t}}{VERIFICATIONS} ADD COLUMN "
                          f"{'IF NOT EXISTS ' if self.sql.is_postgres else ''}signature TEXT")
            c.execute(f"INSERT INTO {{t}}{TRACKING} (name, size, last_id, stack) SELECT %s, 0, 0, "
                      f"'' WHERE NOT EXISTS (SELECT 1 FROM {{t}}{TRACKING} WHERE name = %s)",
                      (NAME, NAME))

    def _state(self) -> tuple[int, int, str]:
        rows = self.sql.query(f"SELECT size, last_id, stack FROM {{t}}{TRACKING} WHERE name = %s",
                              (NAME,))
        r = rows[0]
        return int(r["size"]), int(r["last_id"]), str(r["stack"])

    def catch_up(self) -> tuple[int, bytes]:
        """Hash every event not yet in the leaves; returns (size, root)."""
        size, last_id, stack = self._state()
        if not self.sql.read_page(self.recorder, last_id + 1, 1):
            return size, RootBuilder.from_state(size, bytes.fromhex(stack)).root()
        with self.sql.shared_lock("merkle"):  # one process at a time (see Projector.catch_up)
            return self._catch_up()

    def _catch_up(self) -> tuple[int, bytes]:
        while True:
            size, last_id, stack = self._state()
            builder = RootBuilder.from_state(size, bytes.fromhex(stack))
            page = self.sql.read_page(self.recorder, last_id + 1, PAGE)
            if not page:
                return size, builder.root()
            rows = []
            for n in page:
                h = _leaf(n)
                rows.append((builder.size, n.id, h.hex()))
                builder.append(h)
            try:
                self._extend(size, builder, page[-1].id, rows)
            except Stale:
                continue  # another process got there first: carry on from its state
            if len(page) < PAGE:
                return builder.size, builder.root()

    def _extend(self, expected: int, builder: RootBuilder, last_id: int,
                rows: list[tuple[int, int, str]]) -> None:
        """Record the leaves and the tree's new state, if the size is still ``expected``."""
        new_size, stack = builder.state()
        with self.sql.transaction() as c:
            c.execute(f"UPDATE {{t}}{TRACKING} SET size = %s, last_id = %s, stack = %s "
                      "WHERE name = %s AND size = %s",
                      (new_size, last_id, stack.hex(), NAME, expected))
            if c.rowcount != 1:
                raise Stale
            c.executemany(f"INSERT INTO {{t}}{LEAVES} (idx, notification_id, hash) "
                          "VALUES (%s, %s, %s)", rows)

    def checkpoint(self) -> dict[str, Any]:
        """Sign (and store) a checkpoint of the whole log as it is now; if one of this size
        exists already, that one is returned."""
        size, root = self.catch_up()
        time = self.clock().isoformat()
        signature = base64.b64encode(self._key.sign(
            checkpoint_message(size, root.hex(), time))).decode()
        with self.sql.transaction() as c:
            c.execute(f"INSERT INTO {{t}}{CHECKPOINTS} (size, root, time, signature) VALUES "
                      "(%s, %s, %s, %s) ON CONFLICT (size) DO NOTHING",
                      (size, root.hex(), time, signature))
        return self.checkpoint_at(size) or {}

    def sign(self, data: bytes) -> str:
        """An Ed25519 signature (base64) over ``data`` with the checkpoints' key: what a report
        carries over its own bytes."""
        return base64.b64encode(self._key.sign(data)).decode()

    def record_verification(self, verdict: Verdict) -> None:
        """Keep the outcome of a full verification (``ledger verify``), signed with the
        checkpoints' key (``verification_message``); reports show the last."""
        at = self.clock().isoformat()
        signature = self.sign(verification_message(at, verdict.size, verdict.root, verdict.ok,
                                                   verdict.first_bad_position))
        self.sql.execute(f"INSERT INTO {{t}}{VERIFICATIONS} (at, size, root, ok, "
                         "first_bad_position, signature) VALUES (%s, %s, %s, %s, %s, %s)",
                         (at, verdict.size, verdict.root, int(verdict.ok),
                          verdict.first_bad_position, signature))

    def verifications(self) -> Iterator[dict[str, Any]]:
        """Every recorded verification that found the log whole, oldest first, with
        ``signature_valid`` as in ``last_verification`` (None for a record made before they
        were signed): each one signed says what the log's root was at its size."""
        rows = self.sql.query(f"SELECT at, size, root, ok, first_bad_position, signature FROM "
                              f"{{t}}{VERIFICATIONS} WHERE ok = 1 ORDER BY at")
        for r in rows:
            yield {"at": str(r["at"]), "size": int(r["size"]), "root": str(r["root"]),
                   "signature_valid": self._verification_signed(r)}

    def last_verification(self) -> dict[str, Any] | None:
        """When the whole log was last verified, over how many events, and the outcome, with
        ``signature_valid``: whether this ledger's key signed the record as it reads now. A
        record that someone with write access to the database added or changed (a "passed"
        after altering the log, say) does not hold, and reports say so instead of quoting it;
        so do records made before they were signed."""
        rows = self.sql.query(f"SELECT at, size, root, ok, first_bad_position, signature FROM "
                              f"{{t}}{VERIFICATIONS} ORDER BY at DESC LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        record = {"at": str(r["at"]), "size": int(r["size"]), "root": str(r["root"]),
                  "ok": bool(r["ok"]), "first_bad_position": r["first_bad_position"],
                  "signature": r["signature"]}
        record["signature_valid"] = self._verification_signed(r) is True
        return record

    def _verification_signed(self, r: Any) -> bool | None:
        """Whether this ledger's key signed a verification record's row as it reads now;
        None for a record made before they were signed (no signature at all)."""
        if not isinstance(r["signature"], str):
            return None
        return check_signature(self._key.public_key(), verification_message(
            str(r["at"]), int(r["size"]), str(r["root"]), bool(r["ok"]),
            None if r["first_bad_position"] is None else int(r["first_bad_position"])),
            r["signature"])

    def signed_with_this_key(self) -> bool:
        """Whether the latest stored checkpoint (if any) holds under this ledger's key."""
        latest = self.latest()
        return latest is None or check_signature(
            self._key.public_key(), checkpoint_message(latest["size"], latest["root"],
                                                       latest["time"]), latest["signature"])

    def latest(self) -> dict[str, Any] | None:
        rows = self.sql.query(f"SELECT size, root, time, signature FROM {{t}}{CHECKPOINTS} "
                              "ORDER BY size DESC LIMIT 1")
        return _checkpoint(rows[0], self.public_key) if rows else None

    def checkpoint_at(self, size: int) -> dict[str, Any] | None:
        rows = self.sql.query(f"SELECT size, root, time, signature FROM {{t}}{CHECKPOINTS} "
                              "WHERE size = %s", (size,))
        return _checkpoint(rows[0], self.public_key) if rows else None

    def checkpoints(self) -> Iterator[dict[str, Any]]:
        rows = self.sql.query(f"SELECT size, root, time, signature FROM {{t}}{CHECKPOINTS} "
                              "ORDER BY size")
        for r in rows:
            yield _checkpoint(r, self.public_key)

    def rows_up_to(self, notification_id: int) -> int:
        """How many rows the events table holds with a notification id up to this one: the
        events the log reads, plus any row it does not (an id below 1)."""
        table = self.recorder.events_table_name
        column = "notification_id" if self.sql.is_postgres else "rowid"
        rows = self.sql.query(f"SELECT COUNT(*) AS n FROM {{t}}{table} WHERE {column} <= %s",
                              (notification_id,))
        return int(rows[0]["n"])

    def events_page(self, start: int, limit: int) -> list[Any]:
        """The events from notification id ``start`` on, as the library reads them; or, if it
        cannot (see ``StoredRow``), as stored, so that verification names the position of a
        row it cannot read instead of failing."""
        try:
            return self.sql.read_page(self.recorder, start, limit)
        except UnreadableEvent:
            return self.sql.stored_rows(self.recorder.events_table_name, start, limit)

    def leaves_recorded(self) -> int:
        """How many leaves are recorded now (the highest index, plus one)."""
        rows = self.sql.query(f"SELECT MAX(idx) AS m FROM {{t}}{LEAVES}")
        return 0 if rows[0]["m"] is None else int(rows[0]["m"]) + 1

    def stored_leaves(self) -> Iterator[tuple[int, int, str]]:
        """(index, notification id, hash hex) of every recorded leaf, in order, in pages."""
        after = -1
        while True:
            rows = self.sql.query(f"SELECT idx, notification_id, hash FROM {{t}}{LEAVES} "
                                  "WHERE idx > %s ORDER BY idx LIMIT %s", (after, PAGE))
            for r in rows:
                yield int(r["idx"]), int(r["notification_id"]), str(r["hash"])
            if len(rows) < PAGE:
                return
            after = int(rows[-1]["idx"])

    # -- proofs ----------------------------------------------------------------------------------

    def position_of(self, notification_id: int) -> int:
        """The 1-based position in the log of an event, by its notification id."""
        self.catch_up()
        rows = self.sql.query(f"SELECT idx FROM {{t}}{LEAVES} WHERE notification_id = %s",
                              (notification_id,))
        return int(rows[0]["idx"]) + 1

    def leaf_hashes(self, size: int) -> list[bytes]:
        """The first ``size`` recorded leaf hashes. A proof is computed from all the leaves of
        its tree (linear in the size of the log: about a second per million events)."""
        out: list[bytes] = []
        for idx, _, h in self.stored_leaves():
            if idx >= size:
                break
            out.append(bytes.fromhex(h))
        return out

    def _tree_size(self, size: int | None, field_name: str) -> tuple[int, dict[str, Any] | None]:
        """``size``, checked against the log (default: a checkpoint signed now), with the signed
        checkpoint of that size if there is one."""
        if size is None:
            cp = self.checkpoint()
            return int(cp["size"]), cp
        recorded, _ = self.catch_up()
        if not 1 <= size <= recorded:
            raise InvalidInput(f"{field_name} must be from 1 to the log's size, {recorded}",
                               field=field_name)
        return size, self.checkpoint_at(size)

    def inclusion(self, position: int, size: int | None = None) -> dict[str, Any]:
        """The audit path of the event at ``position`` (1-based, log order) in the tree of
        ``size`` events, with the event as stored, so its leaf can be recomputed."""
        size, cp = self._tree_size(size, "size")
        if not 1 <= position <= size:
            raise InvalidInput(f"position must be from 1 to the tree's size, {size}",
                               field="position")
        leaves = self.leaf_hashes(size)
        rows = self.sql.query(f"SELECT notification_id FROM {{t}}{LEAVES} WHERE idx = %s",
                              (position - 1,))
        n = self.sql.read_page(self.recorder, int(rows[0]["notification_id"]), 1)[0]
        return {
            "position": position, "size": size, "leaf_hash": leaves[position - 1].hex(),
            "audit_path": [h.hex() for h in inclusion_proof(leaves, position - 1, size)],
            "root": merkle_root(leaves).hex(), "checkpoint": cp,
            "event": {"notification_id": n.id, "aggregate_id": n.originator_id,
                      "version": n.originator_version, "topic": n.topic,
                      "stored_state": base64.b64encode(n.state).decode()},
        }

    def consistency(self, first: int, second: int | None = None) -> dict[str, Any]:
        """The proof that the tree of ``first`` events is a prefix of the tree of ``second``
        (default: a checkpoint signed now): nothing recorded by then was changed or removed."""
        second, second_cp = self._tree_size(second, "second")
        if not 1 <= first <= second:
            raise InvalidInput(f"first must be from 1 to second, {second}", field="first")
        leaves = self.leaf_hashes(second)
        return {
            "first": first, "second": second,
            "first_root": merkle_root(leaves[:first]).hex(),
            "second_root": merkle_root(leaves).hex(),
            "proof": [h.hex() for h in consistency_proof(leaves, first, second)],
            "first_checkpoint": self.checkpoint_at(first), "second_checkpoint": second_cp,
        }


def _where(signed: dict[str, Any]) -> str:
    if "verified_at" in signed:
        return f"the verification at {signed['verified_at']}"
    return "kept checkpoint" if signed.get("kept") else "checkpoint"


def _checkpoint(row: Any, public_key: str) -> dict[str, Any]:
    return {"size": int(row["size"]), "root": row["root"], "time": row["time"],
            "signature": row["signature"], "public_key": public_key}


@dataclass
class Verdict:
    """The outcome of ``verify``: ``ok``, the log's size and root, the checkpoints checked, and
    on failure what was wrong and the first bad position (1-based, in log order): exact when an
    event differs from the one recorded there (or the log is shorter than recorded), otherwise
    the first event after the last checkpoint that held (a problem with a checkpoint's own
    signature names no position)."""

    ok: bool
    size: int
    root: str
    checkpoints: int
    problems: list[str] = field(default_factory=list)
    first_bad_position: int | None = None
    signed_up_to: int = 0  # the largest size a signed checkpoint that holds covers


def verify(log: MerkleLog, kept: list[dict[str, Any]] | None = None) -> Verdict:
    """Recompute the tree over every stored event; hold it against the recorded leaves, every
    signed checkpoint stored, every signed record of an earlier verification that passed (its
    size and root), and any ``kept`` outside the system (as ``GET /audit/checkpoint`` returned
    them): a kept checkpoint catches a log cut short together with the stored checkpoints,
    verification records and leaves. (The verification records catch an event deleted from
    the log, with the leaves rehashed and the checkpoints after it deleted, which the ledger
    would then sign checkpoints over.)"""
    problems: list[str] = []
    exact: list[int] = []  # positions known to be bad
    ranges: list[int] = []  # first positions of spans known to hold a bad one

    def bad(position: int | None, message: str, *, somewhere_from: int | None = None) -> None:
        if position is not None:
            exact.append(position)
        if somewhere_from is not None:
            ranges.append(somewhere_from)
        problems.append(message)

    key = load_public_key(log.public_key)
    stored = list(log.checkpoints())
    checkpoints = stored + [{**cp, "kept": True} for cp in kept or []]
    signed: list[dict[str, Any]] = []
    for cp in checkpoints:
        where = "kept checkpoint" if cp.get("kept") else "checkpoint"
        try:
            signer = load_public_key(cp["public_key"]) if cp.get("kept") else key
        except ValueError:
            bad(None, f"{where} at size {cp['size']}: its public key cannot be read")
            continue
        if cp.get("kept") and cp["public_key"] != log.public_key:
            bad(None, f"{where} at size {cp['size']}: signed with another key than this ledger's")
        if not check_signature(signer, checkpoint_message(cp["size"], cp["root"], cp["time"]),
                               cp["signature"]):
            bad(None, f"{where} at size {cp['size']}: signature does not match")
            continue
        signed.append(cp)  # only a checkpoint whose signature holds says anything of the log
    for record in log.verifications():
        if record["signature_valid"] is False:
            bad(None, f"the record of the verification at {record['at']}: signature does not "
                      "match")
        elif record["signature_valid"]:
            signed.append({"size": record["size"], "root": record["root"],
                           "verified_at": record["at"]})
    by_size: dict[int, list[dict[str, Any]]] = {}
    for cp in signed:
        by_size.setdefault(cp["size"], []).append(cp)

    builder = RootBuilder()
    held_at = 0  # the size of the last checkpoint that held
    recorded = log.stored_leaves()
    leaf_reported = False
    # What this ledger recorded when it last hashed: the tree's size and state then. Not
    # signed, so it only catches what was changed without it (an event and its recorded hash
    # changed after the last checkpoint, recorded hashes deleted); signed checkpoints are what
    # an alteration made with all of it in step cannot pass.
    hashed, hashed_last_id, hashed_stack = log._state()
    hashed_root = RootBuilder.from_state(hashed, bytes.fromhex(hashed_stack)).root().hex()
    # The leaves recorded before the events are read: a live follower records more meanwhile,
    # for events appended past the end this walk reads, and those say nothing of the log.
    leaves_before = log.leaves_recorded()

    def hold(size: int) -> None:
        nonlocal held_at
        for cp in by_size.get(size, []):
            if cp["root"] != builder.root().hex():
                bad(None, f"{_where(cp)} at size {size}: the log's root differs; an event in "
                          f"positions {held_at + 1} to {size} was changed",
                    somewhere_from=held_at + 1)
                return
        if size in by_size:
            held_at = size

    hold(0)
    # Rows in a form the ledger never writes: most fail the reading (and are read as stored), but
    # an id in capitals on SQLite reads and hashes as the same UUID, yet the aggregate's own
    # history no longer holds the event.
    malformed, first_malformed = log.sql.malformed_rows(log.recorder.events_table_name)
    form_reported = False
    start, last_read = 1, 0
    while True:
        page = log.events_page(start, PAGE)
        for n in page:
            h = _leaf(n)
            position = builder.size + 1
            leaf = next(recorded, None)
            if not form_reported and (n.id == first_malformed or not getattr(n, "intact", True)):
                how = (f"an id not as the library writes it; {malformed} row(s) hold one"
                       if n.id == first_malformed else "a value the library cannot read")
                bad(position, f"event at position {position} (notification {n.id}) is stored in "
                              f"a form the ledger never writes ({how})")
                form_reported = True
            if not leaf_reported and leaf is not None and (leaf[2] != h.hex() or leaf[1] != n.id):
                bad(position, f"event at position {position} (notification {n.id}) differs "
                              f"from the event recorded there (notification {leaf[1]})")
                leaf_reported = True
            elif not leaf_reported and leaf is None and position <= hashed:
                bad(position, f"event at position {position} (notification {n.id}): its "
                              f"recorded hash is missing, though {hashed} events were hashed")
                leaf_reported = True
            builder.append(h)
            hold(builder.size)
            last_read = n.id
            if builder.size == hashed and (builder.root().hex() != hashed_root
                                           or n.id != hashed_last_id):
                if held_at == hashed:  # the log holds against a signed checkpoint there
                    bad(None, "the record of how far this ledger hashed the log was changed")
                else:
                    bad(None, f"the log's first {hashed} events are not the ones this ledger "
                              f"hashed: an event in positions {held_at + 1} to {hashed} was "
                              "changed, with its recorded hash", somewhere_from=held_at + 1)
        if len(page) < PAGE:
            break
        start = page[-1].id + 1
    if builder.size < hashed:
        bad(builder.size + 1, f"the log ends at {builder.size} events, but this ledger had "
                              f"hashed {hashed}")
    unread = log.rows_up_to(last_read) - builder.size
    if unread:
        bad(None, f"the events table holds {unread} row(s) outside the log's order (a "
                  "notification id below 1, or repeated), which the log does not read but an "
                  "aggregate's history would")
    leftover = next(recorded, None)
    if leftover is not None and not leaf_reported and leftover[0] < leaves_before:
        bad(leftover[0] + 1, f"the log ends at {builder.size} events, but event "
                             f"{leftover[0] + 1} (notification {leftover[1]}) was recorded")
    beyond = [cp for cp in signed if cp["size"] > builder.size]
    if beyond:
        # Cut short, or an event taken out of the middle (the rest renumbered, their hashes
        # recomputed): from here the two look alike, so the first bad position is the first
        # after the last signed point that held, not the end.
        last = max(beyond, key=lambda cp: cp["size"])
        bad(None, f"the log ends at {builder.size} events, but a signed "
                  f"{'verification record' if 'verified_at' in last else 'checkpoint'} "
                  f"covers {last['size']}: an event in positions {held_at + 1} to "
                  f"{last['size']} was removed or changed", somewhere_from=held_at + 1)
    return Verdict(ok=not problems, size=builder.size, root=builder.root().hex(),
                   checkpoints=len(checkpoints), problems=problems,
                   first_bad_position=min(exact or ranges or [0]) or None,
                   signed_up_to=held_at)
