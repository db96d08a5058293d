"""GET /audit/proofs/inclusion and /audit/proofs/consistency: what an auditor checks with nothing
but the public key, the proof and the RFC 9162 verification steps."""

from __future__ import annotations

import base64
import uuid

import pytest

from ledger.audit.checkpoints import check_signature, checkpoint_message, load_public_key
from ledger.audit.merkle import leaf_bytes, leaf_hash, verify_consistency, verify_inclusion

from .conftest import bearer


@pytest.fixture
def auditor(tokens):
    return bearer(tokens["auditor"])


def _history(client, staff, people: int = 2) -> None:
    for n in range(people):
        pid = client.post("/api/v1/participants", headers=staff,
                          json={"name": f"Proof Person {n}"}).json["id"]
        client.post(f"/api/v1/participants/{pid}/consents", headers=staff,
                    json={"scope": "record", "form_version": "1.0", "method": "online"})
        client.post(f"/api/v1/participants/{pid}/payments",
                    headers={**staff, "Idempotency-Key": str(uuid.uuid4())},
                    json={"activity": "conversation", "amount": "25.00", "method": "cash"})


def _signed(cp: dict) -> bool:
    """The auditor's own check of a checkpoint: the exported public key and the signed bytes."""
    key = load_public_key(cp["public_key"])
    return check_signature(key, checkpoint_message(cp["size"], cp["root"], cp["time"]),
                           cp["signature"])


def _leaf_of(event: dict) -> bytes:
    """The leaf recomputed from the event as stored, as the proof documents it."""
    return leaf_hash(leaf_bytes(uuid.UUID(event["aggregate_id"]), event["version"],
                                event["topic"], base64.b64decode(event["stored_state"])))


def test_every_event_has_an_inclusion_proof_that_verifies_against_the_signed_root(
        client, staff, auditor, api_ledger):
    _history(client, staff)
    size = api_ledger.recorder.max_notification_id()

    for position in range(1, size + 1):
        proof = client.get(f"/api/v1/audit/proofs/inclusion?position={position}",
                           headers=auditor).json

        cp = proof["checkpoint"]
        assert proof["size"] == cp["size"] == size and _signed(cp)
        leaf = _leaf_of(proof["event"])
        assert leaf.hex() == proof["leaf_hash"]
        assert verify_inclusion(leaf, position - 1, size,
                                [bytes.fromhex(h) for h in proof["audit_path"]],
                                bytes.fromhex(cp["root"]))
        # the same path does not prove the leaf at another position, nor another leaf here
        assert not verify_inclusion(leaf, position % size, size,
                                    [bytes.fromhex(h) for h in proof["audit_path"]],
                                    bytes.fromhex(cp["root"])) or size == 1
        assert not verify_inclusion(leaf_hash(b"other"), position - 1, size,
                                    [bytes.fromhex(h) for h in proof["audit_path"]],
                                    bytes.fromhex(cp["root"]))


def test_a_kept_checkpoint_is_proved_a_prefix_of_the_log_as_it_grows(
        client, staff, auditor, api_ledger):
    _history(client, staff, people=1)
    kept = client.get("/api/v1/audit/checkpoint", headers=auditor).json
    _history(client, staff, people=3)

    proof = client.get(f"/api/v1/audit/proofs/consistency?first={kept['size']}",
                       headers=auditor).json

    later = proof["second_checkpoint"]
    assert _signed(later) and later["size"] > kept["size"]
    assert proof["first_checkpoint"]["root"] == kept["root"]
    path = [bytes.fromhex(h) for h in proof["proof"]]
    assert verify_consistency(kept["size"], later["size"], bytes.fromhex(kept["root"]),
                              bytes.fromhex(later["root"]), path)
    forged = bytes.fromhex(kept["root"][:-2] + ("00" if kept["root"][-2:] != "00" else "01"))
    assert not verify_consistency(kept["size"], later["size"], forged,
                                  bytes.fromhex(later["root"]), path)

    # an old event proved in the kept tree, by the kept checkpoint's own size
    old = client.get(f"/api/v1/audit/proofs/inclusion?position=2&size={kept['size']}",
                     headers=auditor).json
    assert verify_inclusion(bytes.fromhex(old["leaf_hash"]), 1, kept["size"],
                            [bytes.fromhex(h) for h in old["audit_path"]],
                            bytes.fromhex(kept["root"]))


def test_a_changed_event_no_longer_matches_its_proved_leaf(client, staff, auditor, api_ledger):
    _history(client, staff, people=1)
    client.get("/api/v1/audit/checkpoint", headers=auditor)
    table = api_ledger.recorder.events_table_name
    state = api_ledger.sql.query(f"SELECT state FROM {{t}}{table} WHERE rowid = 2")[0]
    changed = bytearray(state["state"])
    changed[len(changed) // 2] ^= 1
    api_ledger.sql.execute(f"UPDATE {{t}}{table} SET state = %s WHERE rowid = 2",
                           (bytes(changed),))

    proof = client.get("/api/v1/audit/proofs/inclusion?position=2", headers=auditor).json

    assert _leaf_of(proof["event"]).hex() != proof["leaf_hash"]


@pytest.mark.parametrize("path, field", [
    ("inclusion?position=0", "position"),
    ("inclusion?position=999", "position"),
    ("inclusion?position=1&size=999", "size"),
    ("inclusion?position=3&size=2", "position"),
    ("inclusion?position=x", "position"),
    ("inclusion", "position"),
    ("inclusion?position=1&size=-4", "size"),
    ("consistency?first=0", "first"),
    ("consistency?first=5&second=3", "first"),
    ("consistency?first=1&second=999", "second"),
    ("consistency", "first"),
    ("consistency?first=1.5", "first"),
])
def test_a_proof_out_of_range_is_a_problem_naming_the_field_and_writes_nothing(
        client, staff, auditor, api_ledger, path, field):
    _history(client, staff, people=1)
    before = api_ledger.recorder.max_notification_id()

    response = client.get(f"/api/v1/audit/proofs/{path}", headers=auditor)

    assert response.status_code == 422, response.json
    assert response.content_type == "application/problem+json"
    assert field in response.json["errors"]
    assert api_ledger.recorder.max_notification_id() == before
