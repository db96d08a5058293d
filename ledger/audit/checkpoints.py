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

from ..store import Sql
from .merkle import RootBuilder, leaf_bytes, leaf_hash

LEAVES, TRACKING, CHECKPOINTS = "ledger_merkle_leaves", "ledger_merkle_tracking", "ledger_checkpoints"
PAGE = 5_000
NAME = "log"


class Stale(Exception):
    """Another process extended the leaves meanwhile."""


def checkpoint_message(size: int, root: str, time: str) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return json.dumps({"root": root, "size": size, "time": time}, sort_keys=True,
                      separators=(",", ":")).encode()


def public_key_pem(private: Ed25519PrivateKey) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def check_signature(public_pem: str, message: bytes, signature_b64: str) -> bool:
    """Does ``signature_b64`` sign ``message`` under the PEM public key?"""
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, Ed25519PublicKey)
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def _builder(size: int, stack: str) -> RootBuilder:
    builder = RootBuilder()
    builder.size = size
    builder._stack = [bytes.fromhex(stack[i:i + 64]) for i in range(0, len(stack), 64)]
    return builder


def _leaf(n: Any) -> bytes:
    return leaf_hash(leaf_bytes(n.originator_id, n.originator_version, n.topic, n.state))


class MerkleLog:
    """The leaves, the tree's compact state, and the signed checkpoints."""

    def __init__(self, sql: Sql, recorder: Any, signing_key_path: Path,
                 clock: Callable[[], datetime]) -> None:
        self.sql, self.recorder, self.clock = sql, recorder, clock
        pem = signing_key_path.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self._key = key
        self.public_key = public_key_pem(key)
        self.create()

    def create(self) -> None:
        with self.sql.transaction() as c:
            c.execute("UPDATE {t}ledger_meta SET value = value WHERE name = %s", ("master_key_id",))
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{LEAVES} (idx BIGINT PRIMARY KEY, "
                      "notification_id BIGINT NOT NULL, hash TEXT NOT NULL)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{TRACKING} (name TEXT PRIMARY KEY, "
                      "size BIGINT NOT NULL, last_id BIGINT NOT NULL, stack TEXT NOT NULL)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {{t}}{CHECKPOINTS} (size BIGINT PRIMARY KEY, "
                      "root TEXT NOT NULL, time TEXT NOT NULL, signature TEXT NOT NULL)")
            c.execute(f"INSERT INTO {{t}}{TRACKING} (name, size, last_id, stack) SELECT %s, 0, 0, "
                      f"'' WHERE NOT EXISTS (SELECT 1 FROM {{t}}{TRACKING} WHERE name = %s)",
                      (NAME, NAME))

    def _state(self) -> tuple[int, int, str]:
        rows = self.sql.query(f"SELECT size, last_id, stack FROM {{t}}{TRACKING} WHERE name = %s",
                              (NAME,))
        r = rows[0]
        values = (r["size"], r["last_id"], r["stack"]) if isinstance(r, dict) else tuple(r)
        return int(values[0]), int(values[1]), str(values[2])

    def catch_up(self) -> tuple[int, bytes]:
        """Hash every event not yet in the leaves; returns (size, root)."""
        while True:
            size, last_id, stack = self._state()
            page = self.recorder.select_notifications(start=last_id + 1, limit=PAGE)
            builder = _builder(size, stack)
            if not page:
                return size, builder.root()
            rows = []
            for n in page:
                h = _leaf(n)
                rows.append((builder.size, n.id, h.hex()))
                builder.append(h)
            new_stack = "".join(node.hex() for node in builder._stack)
            with self.sql.transaction() as c:
                c.execute(f"UPDATE {{t}}{TRACKING} SET size = %s, last_id = %s, stack = %s "
                          "WHERE name = %s AND size = %s",
                          (builder.size, page[-1].id, new_stack, NAME, size))
                if c.rowcount != 1:
                    continue  # another process got there first: start from its state
                c.executemany(f"INSERT INTO {{t}}{LEAVES} (idx, notification_id, hash) "
                              "VALUES (%s, %s, %s)", rows)
            if len(page) < PAGE:
                return builder.size, builder.root()

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

    def stored_leaves(self) -> Iterator[tuple[int, int, str]]:
        """(index, notification id, hash hex) of every recorded leaf, in order, in pages."""
        after = -1
        while True:
            rows = self.sql.query(f"SELECT idx, notification_id, hash FROM {{t}}{LEAVES} "
                                  "WHERE idx > %s ORDER BY idx LIMIT %s", (after, PAGE))
            for r in rows:
                values = (r["idx"], r["notification_id"], r["hash"]) if isinstance(r, dict) \
                    else tuple(r)
                yield int(values[0]), int(values[1]), str(values[2])
            if len(rows) < PAGE:
                return
            after = int(rows[-1]["idx"] if isinstance(rows[-1], dict) else rows[-1][0])


def _checkpoint(row: Any, public_key: str) -> dict[str, Any]:
    size, root, time, signature = (
        (row["size"], row["root"], row["time"], row["signature"]) if isinstance(row, dict)
        else tuple(row))
    return {"size": int(size), "root": root, "time": time, "signature": signature,
            "public_key": public_key}


@dataclass
class Verdict:
    """The outcome of ``verify``: ``ok``, the log's size and root, the checkpoints checked, and
    on failure the first bad position (1-based, in log order) and what was wrong there."""

    ok: bool
    size: int
    root: str
    checkpoints: int
    problems: list[str] = field(default_factory=list)
    first_bad_position: int | None = None


def verify(log: MerkleLog, progress: Callable[[int], None] | None = None) -> Verdict:
    """Recompute the tree over every stored event; hold it against the recorded leaves and
    every signed checkpoint."""
    problems: list[str] = []
    first_bad: int | None = None

    def bad(position: int, message: str) -> None:
        nonlocal first_bad
        if first_bad is None or position < first_bad:
            first_bad = position
        problems.append(message)

    checkpoints = list(log.checkpoints())
    for cp in checkpoints:
        if not check_signature(log.public_key, checkpoint_message(cp["size"], cp["root"],
                                                                  cp["time"]), cp["signature"]):
            bad(max(cp["size"], 1), f"checkpoint at size {cp['size']}: signature does not match")
    by_size = {cp["size"]: cp for cp in checkpoints}
    builder = RootBuilder()
    if 0 in by_size and by_size[0]["root"] != builder.root().hex():
        bad(1, "checkpoint at size 0: root does not match the empty log")
    stored = log.stored_leaves()
    leaf_mismatch_reported = False
    start = 1
    while True:
        page = log.recorder.select_notifications(start=start, limit=PAGE)
        for n in page:
            h = _leaf(n)
            position = builder.size + 1
            recorded = next(stored, None)
            if not leaf_mismatch_reported and recorded is not None and (
                    recorded[2] != h.hex() or recorded[1] != n.id):
                bad(position, f"event at position {position} (notification {n.id}) differs "
                              f"from the event recorded there (notification {recorded[1]})")
                leaf_mismatch_reported = True
            builder.append(h)
            held = by_size.get(builder.size)
            if held is not None and held["root"] != builder.root().hex():
                bad(builder.size, f"checkpoint at size {builder.size}: the log's root differs")
        if progress is not None:
            progress(len(page))
        if len(page) < PAGE:
            break
        start = page[-1].id + 1
    leftover = next(stored, None)
    if leftover is not None and not leaf_mismatch_reported:
        bad(leftover[0] + 1, f"the log ends at {builder.size} events, but event "
                             f"{leftover[0] + 1} (notification {leftover[1]}) was recorded")
    beyond = [cp["size"] for cp in checkpoints if cp["size"] > builder.size]
    if beyond:
        bad(builder.size + 1, f"the log ends at {builder.size} events, but a signed checkpoint "
                              f"covers {max(beyond)}")
    return Verdict(ok=not problems, size=builder.size, root=builder.root().hex(),
                   checkpoints=len(checkpoints), problems=problems, first_bad_position=first_bad)
