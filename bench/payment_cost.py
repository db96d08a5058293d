"""Where a payment's CPU goes: the same work built up layer by layer, in one process and one
thread, beside a bare eventsourcing save measured in the same run, on SQLite and PostgreSQL.

    python bench/payment_cost.py [--payments 1000] [--rounds 3] [--no-postgres]

Each layer is timed as CPU time per operation (``time.process_time``: every thread of this
process, so the views' follower counts where it runs) over ``--payments`` operations, after a
warm-up, each payment for a participant registered beforehand and not yet loaded:

- ``bare_save``: eventsourcing's Application saving one small aggregate (bench/bare_app.py's Note),
  as the bare app of bench/api.py does;
- ``bare_http``: the same through the bare Flask app (Flask's test client, no network);
- ``bare_save_encrypted``: the bare save with the library's AESCipher, as the ledger stores;
- ``ledger_command``: ``Ledger.record_payment`` (load the person, the domain's decision, the
  Payment and the note on the person in one atomic save, personal fields sealed), views left to
  another process (``LEDGER_PROJECTIONS=external``);
- ``ledger_http``: ``POST /api/v1/participants/{id}/payments`` through the ledger's Flask app:
  the token checked, the body validated, the Idempotency-Key's fingerprint and kept response,
  the security headers and the access log; views still external;
- ``ledger_http_views``: the same with the views and the Merkle leaves kept inline, as
  ``ledger serve`` runs (the follower thread's CPU included, waited for at the end).

Differences between consecutive layers say what each part costs. Rounds alternate the layers,
each figure is the median of its rounds. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from api import PG, drop_schema, new_schema  # noqa: E402

BODY = {"activity": "conversation", "amount": "25.00", "method": "bank_transfer"}
WARMUP = 100


def per_op(operation: Callable[[int], None], n: int, settle: Callable[[], None] | None = None
           ) -> float:
    """CPU microseconds per call of ``operation(i)`` for i in 0..n-1 (after ``settle``)."""
    start = time.process_time()
    for i in range(n):
        operation(i)
    if settle is not None:
        settle()
    return (time.process_time() - start) / n * 1e6


def bare_env(store: str, tmp: Path, encrypted: bool) -> tuple[dict[str, str], str | None]:
    from bare_app import store_env

    schema = None
    if store == "sqlite":
        env = store_env(sqlite_path=str(tmp / f"bare-{uuid.uuid4().hex[:6]}.sqlite3"))
    else:
        schema = new_schema("cost_bare")
        env = store_env(postgres_schema=schema)
    if encrypted:
        from eventsourcing.cryptography import AESCipher

        env.update({"CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
                    "CIPHER_KEY": AESCipher.create_key(32)})
    return env, schema


def bare_save(store: str, tmp: Path, n: int, encrypted: bool) -> float:
    from bare_app import Note
    from eventsourcing.application import Application

    env, schema = bare_env(store, tmp, encrypted)
    app = Application(env=env)
    try:
        for _ in range(WARMUP):
            app.save(Note("conversation", "25.00"))
        return per_op(lambda _i: app.save(Note("conversation", "25.00")), n)
    finally:
        app.close()
        if schema:
            drop_schema(schema)


def bare_http(store: str, tmp: Path, n: int) -> float:
    from bare_app import create

    env, schema = bare_env(store, tmp, False)
    os.environ.pop("BARE_POSTGRES_SCHEMA", None)
    if schema:
        os.environ["BARE_POSTGRES_SCHEMA"] = schema
    else:
        os.environ["BARE_SQLITE"] = env["SQLITE_DBNAME"]
    try:
        client = create().test_client()
        body = json.dumps({"activity": "conversation", "amount": "25.00"}).encode()
        headers = {"Content-Type": "application/json"}
        for _ in range(WARMUP):
            client.post("/save", data=body, headers=headers)
        return per_op(lambda _i: client.post("/save", data=body, headers=headers), n)
    finally:
        if schema:
            drop_schema(schema)


def ledger_env(store: str, tmp: Path, projections: str) -> tuple[dict[str, str], str | None]:
    env = {"LEDGER_DATA_DIR": str(tmp / f"ledger-{uuid.uuid4().hex[:6]}"),
           "LEDGER_PROJECTIONS": projections}
    schema = None
    if store == "postgres":
        schema = f"cost_ledger_{uuid.uuid4().hex[:8]}"
        env["LEDGER_DATABASE_URL"] = f"{PG}?schema={schema}"
    return env, schema


def ledger_layer(store: str, tmp: Path, n: int, projections: str, http: bool) -> float:
    from ledger.api import create_app
    from ledger.application import Ledger

    env, schema = ledger_env(store, tmp, projections)
    try:
        setup = Ledger(env)
        setup.init_study(by="bench")
        _, token = setup.tokens.create("staff", "bench")
        people = [setup.register_participant("Bench Person", by="bench")["id"]
                  for _ in range(n + WARMUP)]
        setup.projector.catch_up()  # what a running ledger's follower would have done
        setup.merkle.catch_up()
        setup.close()
        ledger = Ledger(env)
        try:
            if not http:
                def pay(i: int) -> None:
                    ledger.record_payment(people[i], "conversation", "25.00", "bank_transfer",
                                          by="staff:bench")
                for i in range(WARMUP):
                    pay(n + i)
                return per_op(pay, n)
            client = create_app({"LEDGER": ledger}).test_client()
            auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            body = json.dumps(BODY).encode()

            def post(i: int) -> None:
                r = client.post(f"/api/v1/participants/{people[i]}/payments", data=body,
                                headers={**auth, "Idempotency-Key": str(uuid.uuid4())})
                assert r.status_code == 201, r.status_code

            def settle() -> None:  # the follower's work for these payments, done
                if projections == "inline":
                    ledger.views_at_least()
                    ledger.checkpoint_if_due()
            for i in range(WARMUP):
                post(n + i)
            settle()
            return per_op(post, n, settle)
        finally:
            ledger.close()
    finally:
        if schema:
            drop_schema(schema)


def one_round(store: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {"bare_save": bare_save(store, tmp, n, encrypted=False),
                "bare_http": bare_http(store, tmp, n),
                "bare_save_encrypted": bare_save(store, tmp, n, encrypted=True),
                "ledger_command": ledger_layer(store, tmp, n, "external", http=False),
                "ledger_http": ledger_layer(store, tmp, n, "external", http=True),
                "ledger_http_views": ledger_layer(store, tmp, n, "inline", http=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    out: dict = {"bench": "payment_cost", "payments": args.payments, "rounds": args.rounds,
                 "unit": "CPU microseconds per operation"}
    for store in ["sqlite"] + ([] if args.no_postgres else ["postgres"]):
        rounds = [one_round(store, args.payments) for _ in range(args.rounds)]
        med = {k: round(statistics.median(r[k] for r in rounds)) for k in rounds[0]}
        med["ratio_ledger_http_views_to_bare_http"] = round(
            med["ledger_http_views"] / med["bare_http"], 2)
        out[store] = med
        print(store, ", ".join(f"{k} {v}" for k, v in med.items()), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
