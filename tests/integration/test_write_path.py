"""The write path under concurrency: the SQLite write gate across processes, group commit of one
process's saves, per-thread reading connections, and the lock that keeps two processes from
catching the views up at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.application import Ledger
from ledger.locks import FileLock
from ledger.projections.rows import rows_key
from tests.concurrency import race


def _hold_lock(path: str, entered: multiprocessing.Event, seconds: float) -> None:
    lock = FileLock(path)
    assert lock.acquire(5)
    entered.set()
    time.sleep(seconds)
    lock.release()


def _append_under_lock(path: str, log: str, n: int) -> None:
    lock = FileLock(path)
    for i in range(n):
        assert lock.acquire(30)
        try:
            with open(log, "a") as f:  # two writes per turn: interleaved only without the lock
                f.write(f"{os.getpid()} begin {i}\n")
                f.flush()
                time.sleep(0.0005)
                f.write(f"{os.getpid()} end {i}\n")
        finally:
            lock.release()


def test_the_file_lock_lets_one_process_in_at_a_time(tmp_path):
    path, log = str(tmp_path / "x.lock"), str(tmp_path / "log")
    ctx = multiprocessing.get_context("spawn")

    procs = [ctx.Process(target=_append_under_lock, args=(path, log, 60)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)

    lines = Path(log).read_text().splitlines()
    assert [p.exitcode for p in procs] == [0, 0, 0] and len(lines) == 360
    for begin, end in zip(lines[::2], lines[1::2], strict=True):
        assert begin.replace("begin", "end") == end  # every turn whole, never interleaved


def test_the_file_lock_times_out_on_a_holder_and_is_freed_when_the_holder_dies(tmp_path):
    path = str(tmp_path / "x.lock")
    ctx = multiprocessing.get_context("spawn")
    entered = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, entered, 60))
    holder.start()
    assert entered.wait(30)
    lock = FileLock(path)

    started = time.monotonic()
    refused = lock.acquire(0.3)
    waited = time.monotonic() - started
    holder.kill()
    holder.join(10)
    had = lock.acquire(5)

    assert refused is False and 0.3 <= waited < 2
    assert had is True
    lock.release()


def test_a_forked_child_does_not_share_its_parents_file_lock(tmp_path):
    lock = FileLock(str(tmp_path / "x.lock"))
    assert lock.acquire(1)  # opens the lock file, which the child inherits
    lock.release()
    ctx = multiprocessing.get_context("fork")
    holding, done = ctx.Event(), ctx.Event()

    def child() -> None:
        assert lock.acquire(1)
        holding.set()
        done.wait(30)
        lock.release()

    p = ctx.Process(target=child)
    p.start()
    assert holding.wait(30)
    # On an inherited descriptor the child's flock would be the parent's own, and this would
    # succeed while the child holds it.
    had = lock.acquire(0.3)
    done.set()
    p.join(30)

    assert had is False and p.exitcode == 0


def test_threads_saving_at_once_are_committed_together_and_every_save_is_kept(store_env):
    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    ledger.init_study(by="t")
    people = [ledger.register_participant("Group Commit Person", by="t")["id"] for _ in range(64)]
    recorder, transactions = ledger.recorder, []
    together, alone = recorder._insert_together, recorder._insert_alone
    recorder._insert_together = lambda batch: transactions.append(len(batch)) or together(batch)
    recorder._insert_alone = lambda save: transactions.append(1) or alone(save)

    outcomes = race([
        (lambda pid=pid: ledger.record_payment(pid, "conversation", "25.00", "cash", by="t"))
        for pid in people])
    stored = {n.originator_id for n in ledger.recorder.select_notifications(start=1, limit=10_000)
              if n.topic == "ledger:Payment.Recorded"}
    ledger.close()

    assert all(isinstance(o, dict) for o in outcomes), outcomes
    assert stored == {o["id"] for o in outcomes}  # type: ignore[index]
    assert sum(transactions) == len(people)
    assert len(transactions) < len(people)  # some saves shared a transaction


def test_a_lost_race_inside_a_shared_commit_fails_alone(store_env):
    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    ledger.init_study(by="t")
    people = [ledger.register_participant("Shared Commit Person", by="t")["id"] for _ in range(8)]
    # Each person is paid twice at once, from two threads of one process: one of each pair must
    # win, whatever else shared its transaction.

    outcomes = race([
        (lambda pid=pid: ledger.record_payment(pid, "conversation", "25.00", "cash", by="t"))
        for pid in people for _ in range(2)])
    paid = [n for n in ledger.recorder.select_notifications(start=1, limit=10_000)
            if n.topic == "ledger:Payment.Recorded"]
    ledger.close()

    pairs = [outcomes[i:i + 2] for i in range(0, 16, 2)]  # (the two attempts for each person)
    assert len(paid) == 8
    for pair in pairs:
        assert sorted(type(o).__name__ for o in pair) == ["PaymentAlreadyRecorded", "dict"], pair


def test_a_failing_save_in_a_batch_leaves_the_others_written(store_env):
    from eventsourcing.persistence import IntegrityError, StoredEvent

    from ledger.group_commit import Save

    ledger = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    start = (ledger.recorder.max_notification_id() or 0) + 1
    taken = uuid4()
    ledger.recorder.insert_events([StoredEvent(taken, 1, "ledger:Test.Event", b"x")])
    batch = [Save([StoredEvent(uuid4(), 1, "ledger:Test.Event", b"a")], {}),
             Save([StoredEvent(taken, 1, "ledger:Test.Event", b"b")], {}),  # version 1 is taken
             Save([StoredEvent(uuid4(), 1, "ledger:Test.Event", b"c")], {})]

    ledger.recorder._commit(batch)  # what the leading thread does with what was queued
    states = [n.state for n in ledger.recorder.select_notifications(start=start, limit=10)]
    ledger.close()

    assert [s.done for s in batch] == [True] * 3
    assert isinstance(batch[1].error, IntegrityError) and batch[1].ids is None
    assert batch[0].error is None and batch[2].error is None
    assert states == [b"x", b"a", b"c"]


def test_each_thread_reads_on_its_own_connection_and_a_nested_read_gets_another(tmp_path):
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path / "d"), "LEDGER_PROJECTIONS": "external"})
    datastore = ledger.recorder.datastore
    seen: dict[str, object] = {}

    def read(name: str) -> None:
        with datastore.get_connection(commit=False) as a:
            with datastore.get_connection(commit=False) as b:
                seen[name + "-nested"] = b
            seen[name] = a
        with datastore.get_connection(commit=False) as again:
            seen[name + "-again"] = again

    threads = [threading.Thread(target=read, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()

    assert seen["one"] is seen["one-again"] and seen["two"] is seen["two-again"]
    assert seen["one"] is not seen["two"]
    assert seen["one-nested"] is not seen["one"]
    assert seen["one"].closed and seen["two"].closed  # closed with the ledger


def _open_lock_files() -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # (the listing's own descriptor, gone by now)
        if target.endswith(".lock"):
            paths.append(target)
    return paths


def test_a_closed_ledger_leaves_no_lock_file_open(tmp_path):
    before = _open_lock_files()
    ledger = Ledger({"LEDGER_DATA_DIR": str(tmp_path / "d")})
    ledger.init_study(by="t")
    ledger.register_participant("Lockfile Tester", by="t")  # a save: the gate, then views, merkle
    ledger.views_at_least()
    held = [p for p in _open_lock_files() if p not in before]

    ledger.close()

    assert {Path(p).name.rsplit("-", 1)[-1] for p in held} >= {"write.lock", "views.lock"}
    assert [p for p in _open_lock_files() if p not in before] == []


def _pay_many(env: dict[str, str], people: list[str], out: multiprocessing.Queue) -> None:
    from uuid import UUID

    ledger = Ledger(env)
    ok = 0
    for pid in people:
        ledger.record_payment(UUID(pid), "conversation", "25.00", "cash", by="t")
        ok += 1
    ledger.close()
    out.put(ok)


def test_processes_writing_through_the_gate_lose_nothing_and_their_views_agree(store_env):
    setup = Ledger(store_env)
    setup.init_study(by="t")
    people = [str(setup.register_participant("Gate Person", by="t")["id"]) for _ in range(90)]
    setup.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()

    procs = [ctx.Process(target=_pay_many, args=(store_env, people[i::3], out)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    after = Ledger(store_env)
    after.views_at_least()
    paid = [n for n in after.recorder.select_notifications(start=1, limit=10_000)
            if n.topic == "ledger:Payment.Recorded"]
    live = {k: sorted(map(rows_key, v)) for k, v in after.projector.views.all_rows().items()}
    after.projector.rebuild()
    rebuilt = {k: sorted(map(rows_key, v)) for k, v in after.projector.views.all_rows().items()}
    after.close()

    assert [p.exitcode for p in procs] == [0, 0, 0] and sorted(out.get() for _ in procs) == [30] * 3
    assert len(paid) == 90 and len(live["payments"]) == 90
    assert live == rebuilt


def _catch_up_under_lock(env: dict[str, str], name: str, log: str, n: int) -> None:
    ledger = Ledger({**env, "LEDGER_PROJECTIONS": "external"})
    for _ in range(n):
        with ledger.sql.shared_lock(name) as had:
            assert had
            with open(log, "a") as f:
                f.write(f"{os.getpid()} in\n")
                f.flush()
                time.sleep(0.002)
                f.write(f"{os.getpid()} out\n")
    ledger.close()


def test_the_shared_lock_admits_one_process_at_a_time(store_env, tmp_path):
    Ledger(store_env).close()
    log = str(tmp_path / "log")
    ctx = multiprocessing.get_context("spawn")

    procs = [ctx.Process(target=_catch_up_under_lock, args=(store_env, "views", log, 25))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)

    lines = Path(log).read_text().splitlines()
    assert [p.exitcode for p in procs] == [0, 0, 0] and len(lines) == 150
    for entered, left in zip(lines[::2], lines[1::2], strict=True):
        assert entered.replace(" in", " out") == left


def test_the_shared_lock_gives_up_after_its_timeout_and_the_block_still_runs(store_env):
    a, b = Ledger(store_env), Ledger(store_env)
    ran = []

    with a.sql.shared_lock("views") as first:
        holder = threading.Thread(target=lambda: ran.append(_try(b)))
        holder.start()
        holder.join(30)
    with b.sql.shared_lock("views", timeout_s=1) as later:
        ran.append(("later", later))
    a.close()
    b.close()

    assert first is True
    assert ran == [("refused", False), ("later", True)]


def _try(ledger: Ledger) -> tuple[str, bool]:
    started = time.monotonic()
    with ledger.sql.shared_lock("views", timeout_s=0.3) as had:
        assert 0.25 <= time.monotonic() - started < 5
        return ("refused", had)


@pytest.mark.parametrize("jobs", [2])
def test_two_processes_catching_the_views_up_never_compute_the_same_page(store_env, jobs):
    # Counted by the views' own guard: a page computed by one process and then found already
    # applied by another raises Stale inside catch_up. With the shared lock there is none.
    from ledger.projections import projector as projector_module

    setup = Ledger({**store_env, "LEDGER_PROJECTIONS": "external"})
    setup.init_study(by="t")
    for _ in range(300):
        setup.register_participant("Stale Person", by="t")
    setup.close()
    stale = []
    real = projector_module.Projector._apply_batch

    def counting(self, expected, page, decoded=None):  # type: ignore[no-untyped-def]
        try:
            return real(self, expected, page, decoded)
        except projector_module.Stale:
            stale.append(len(page))
            raise

    projector_module.Projector._apply_batch = counting  # type: ignore[method-assign]
    try:
        ledgers = [Ledger({**store_env, "LEDGER_PROJECTIONS": "external"}) for _ in range(jobs)]
        race([(lambda lg=lg: lg.projector.catch_up(page_size=20)) for lg in ledgers])
        positions = [lg.projector.views.position() for lg in ledgers]
        for lg in ledgers:
            lg.close()
    finally:
        projector_module.Projector._apply_batch = real  # type: ignore[method-assign]

    assert stale == []
    assert len(set(positions)) == 1 and positions[0] > 300
