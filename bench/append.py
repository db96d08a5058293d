"""Append throughput: the ledger's own commands (one save each) against a bare eventsourcing
aggregate doing the same number of saves, in the same run, on SQLite and on PostgreSQL.

    python bench/append.py [--commands 3000] [--postgres URL | --no-postgres]

Ends with one JSON line: figures per store and the ledger/bare ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid

from api import drop_schema  # (bench/ is on the path: these run as scripts)
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from ledger.application import Ledger

SCOPES = ["take_part", "record", "store", "analyse", "quote", "publish", "archive",
          "contact_again"]


PROJECTIONS = "inline"  # set by --projections


class Tally(Aggregate):
    """The bare baseline: one small event per save."""

    @event("Counted")
    def count(self, n: int) -> None:
        self.n = n


def bare(env: dict[str, str], saves: int) -> float:
    """Saves per second for a bare aggregate held in memory: trigger one event, save."""
    app: Application = Application(env=env)
    tally = Tally()
    app.save(tally)
    start = time.perf_counter()
    for i in range(saves):
        tally.count(i)
        app.save(tally)
    elapsed = time.perf_counter() - start
    app.close()
    return saves / elapsed


def person_commands(ledger: Ledger) -> list:
    """One participant's life as single-save commands; registration counts as one command."""
    state: dict[str, uuid.UUID] = {}

    def register() -> None:
        state["pid"] = ledger.register_participant(
            "Bench Person", "bench@example.invalid", communities=["Bench"], by="bench")["id"]

    def need() -> None:
        state["need"] = ledger.request_access_need(state["pid"], "captions", "live captions",
                                                   by="bench")

    commands = [register]
    commands += [lambda s=scope: ledger.grant_consent(
        state["pid"], s, "1.0", "online", "anonymous" if s == "quote" else None, by="bench")
        for scope in SCOPES]
    commands += [
        need,
        lambda: ledger.record_access_outcome(state["pid"], state["need"], "met", by="bench"),
        lambda: ledger.arrange_payment(state["pid"], "conversation", "voucher", "self", True,
                                       by="bench"),
        lambda: ledger.record_payment(state["pid"], "conversation", "25.00", "voucher",
                                      reference="B-1", by="bench"),
        lambda: ledger.withdraw_consent(state["pid"], "publish", "phone", by="bench"),
    ]
    return commands


def run_ledger(env: dict[str, str], commands: int) -> float:
    """Commands per second through the Ledger, over as many fresh participants as it takes."""
    ledger = Ledger({**env, "LEDGER_PROJECTIONS": PROJECTIONS})
    ledger.init_study(by="bench")
    done = 0
    start = time.perf_counter()
    while done < commands:
        for command in person_commands(ledger):
            command()
            done += 1
            if done >= commands:
                break
    elapsed = time.perf_counter() - start
    ledger.close()
    return done / elapsed


def bare_env_sqlite(path: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}


def bare_env_postgres(url: str, schema: str) -> dict[str, str]:
    from ledger.store import ensure_postgres_schema, postgres_env

    env = postgres_env(f"{url}?schema={schema}")
    ensure_postgres_schema(env)
    return env


def measure(store: str, commands: int, url: str | None, rounds: int) -> dict[str, float]:
    """Alternate bare and ledger rounds on the same disk and take the median of each, so that
    the fsync noise of one moment does not land on one side only."""
    bare_rates, ledger_rates = [], []
    per_round = commands // rounds
    with tempfile.TemporaryDirectory() as d:
        schemas = [f"bench_bare_{uuid.uuid4().hex[:8]}", f"bench_ledger_{uuid.uuid4().hex[:8]}"]
        try:
            for _ in range(rounds):
                if store == "sqlite":
                    bare_rates.append(bare(bare_env_sqlite(f"{d}/bare.sqlite3"), per_round))
                    ledger_rates.append(run_ledger({"LEDGER_DATA_DIR": f"{d}/ledger"}, per_round))
                else:
                    assert url
                    bare_rates.append(bare(bare_env_postgres(url, schemas[0]), per_round))
                    ledger_rates.append(run_ledger(
                        {"LEDGER_DATA_DIR": d,
                         "LEDGER_DATABASE_URL": f"{url}?schema={schemas[1]}"}, per_round))
        finally:
            if store == "postgres":
                for schema in schemas:
                    drop_schema(schema, url or "")
    bare_rate, ledger_rate = statistics.median(bare_rates), statistics.median(ledger_rates)
    return {"bare_saves_per_s": round(bare_rate, 1), "ledger_commands_per_s": round(ledger_rate, 1),
            "ratio": round(ledger_rate / bare_rate, 3), "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--projections", choices=["inline", "external"], default="inline",
                        help="inline: this process keeps the views (the default); external: "
                        "views left to `ledger projections run`, so only the saves are timed")
    args = parser.parse_args()
    global PROJECTIONS
    PROJECTIONS = args.projections
    results = {"commands": args.commands, "projections": args.projections}
    stores = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    for store in stores:
        results[store] = measure(store, args.commands, args.postgres, args.rounds)
        r = results[store]
        print(f"{store:9} bare {r['bare_saves_per_s']:8.1f} saves/s   ledger "
              f"{r['ledger_commands_per_s']:8.1f} commands/s   ratio {r['ratio']:.2f}")
    print(json.dumps({"bench": "append", **results}))


if __name__ == "__main__":
    main()
