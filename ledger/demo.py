"""The demo: twelve fictional storytellers in the pilot, in the varied states real ones reach.

Every name, address and detail here is invented; "Example" and ".invalid" make that plain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from .application import Ledger

BY = "demo"
ALL_SCOPES = ("take_part", "record", "store", "analyse", "quote", "publish", "archive",
              "contact_again")


def _person(ledger: Ledger, name: str, community: str, **extra: Any) -> UUID:
    slug = name.split()[0].lower()
    ref = ledger.register_participant(
        name, email=f"{slug}@example.invalid", communities=[community], by=BY, **extra
    )
    return ref["id"]


def _consent_all(ledger: Ledger, pid: UUID, method: str = "online",
                 skip: tuple[str, ...] = ()) -> None:
    for scope in ALL_SCOPES:
        if scope not in skip:
            attribution = "anonymous" if scope == "quote" else None
            ledger.grant_consent(pid, scope, "1.0", method, attribution, by=BY)


def _paid(ledger: Ledger, pid: UUID, method: str, payee: str = "self",
          activity: str = "conversation", amount: str = "25.00", **kw: Any) -> UUID:
    ledger.arrange_payment(pid, activity, method, payee, True, by=BY)
    return ledger.record_payment(pid, activity, amount, method, by=BY, **kw)["id"]


def _stories() -> list[Callable[[Ledger], None]]:
    def amara(lg: Ledger) -> None:
        pid = _person(lg, "Amara Example-Okafor", "Black British")
        _consent_all(lg, pid)
        need = lg.request_access_need(pid, "captions", "Live captions on the video call", by=BY)
        lg.record_access_outcome(pid, need, "met", "Captioner booked", by=BY)
        _paid(lg, pid, "bank_transfer", reference="DEMO-BT-0001")

    def bilal(lg: Ledger) -> None:
        pid = _person(lg, "Bilal Example-Rahman", "British Pakistani")
        _consent_all(lg, pid)
        lg.withdraw_consent(pid, "publish", "phone", "Not ready to be public", by=BY)
        _paid(lg, pid, "voucher", reference="DEMO-VCH-0002")

    def chen(lg: Ledger) -> None:
        pid = _person(lg, "Chen Example-Li", "Deaf, British Chinese", preferred_contact="email")
        _consent_all(lg, pid, method="bsl")
        need = lg.request_access_need(pid, "BSL interpreter", "Two interpreters, one hour", by=BY)
        lg.record_access_outcome(pid, need, "met", "Interpreters confirmed", by=BY)
        lg.withdraw_consent(pid, "quote", "email", by=BY)
        lg.withdraw_consent(pid, "publish", "email", by=BY)
        _paid(lg, pid, "cash")

    def dana(lg: Ledger) -> None:
        pid = _person(lg, "Dana Example-Mensah", "Black African")
        _consent_all(lg, pid, skip=("archive",))
        lg.decline_payment(pid, "conversation", "Prefers not to be paid", by=BY)

    def esi(lg: Ledger) -> None:
        pid = _person(lg, "Esi Example-Boateng", "Black British, Disabled")
        _consent_all(lg, pid, method="easy_read")
        lg.arrange_payment(pid, "conversation", "bank_transfer", "self", True, by=BY)
        lg.reduce_payment(pid, "conversation", "10.00", "Asked for less because of benefits",
                          by=BY)
        lg.record_payment(pid, "conversation", "10.00", "bank_transfer", by=BY)
        need = lg.request_access_need(pid, "easy read", "Easy-read consent form", by=BY)
        lg.record_access_outcome(pid, need, "met", by=BY)

    def farid(lg: Ledger) -> None:
        pid = _person(lg, "Farid Example-Haddad", "Arab British")
        _consent_all(lg, pid)
        _paid(lg, pid, "charity_donation", payee="charity", reference="DEMO-CHARITY-06")

    def grace(lg: Ledger) -> None:
        pid = _person(lg, "Grace Example-Smith", "Romani Gypsy")
        _consent_all(lg, pid, method="verbal_recorded")
        breaks = lg.request_access_need(pid, "breaks", "A break every 20 minutes", by=BY)
        lg.record_access_outcome(pid, breaks, "partly_met", "One break only", by=BY)
        lg.request_access_need(pid, "easy read", "Easy-read summary of the workshop", by=BY)
        _paid(lg, pid, "gift_card")

    def hamza(lg: Ledger) -> None:
        pid = _person(lg, "Hamza Example-Ali", "British Bangladeshi, autistic")
        for scope in ("take_part", "record", "store"):
            lg.request_consent(pid, scope, "1.0", by=BY)
        lg.request_access_need(pid, "quiet room", "Camera off and written questions first",
                               by=BY)

    def ifeoma(lg: Ledger) -> None:
        pid = _person(lg, "Ifeoma Example-Eze", "Black British")
        _consent_all(lg, pid)
        _paid(lg, pid, "bank_transfer")
        for scope in ALL_SCOPES:
            lg.withdraw_consent(pid, scope, "letter", by=BY)

    def jomo(lg: Ledger) -> None:
        pid = _person(lg, "Jomo Example-Kamau", "Black African", preferred_contact="phone")
        _consent_all(lg, pid, method="supporter")
        _paid(lg, pid, "third_party", payee="third_party")
        _paid(lg, pid, "third_party", payee="third_party", activity="workshop")

    def kezia(lg: Ledger) -> None:
        pid = _person(lg, "Kezia Example-Brown", "Jewish")
        _consent_all(lg, pid)
        first = _paid(lg, pid, "bank_transfer", reference="DEMO-BT-BOUNCED")
        lg.reverse_payment(pid, first, "Bank returned the transfer", by=BY)
        lg.record_payment(pid, "conversation", "25.00", "voucher", by=BY)

    def lior(lg: Ledger) -> None:
        pid = _person(lg, "Lior Example-Cohen", "Jewish, mixed heritage")
        _consent_all(lg, pid, skip=("archive",))
        lg.request_consent(pid, "archive", "1.0", by=BY)
        lg.refuse_consent(pid, "archive", by=BY)
        _paid(lg, pid, "bank_transfer", activity="workshop")
        lg.record_expense(pid, "workshop", "7.40", "bank_transfer", "Bus fare to the venue",
                          by=BY)

    return [amara, bilal, chen, dana, esi, farid, grace, hamza, ifeoma, jomo, kezia, lior]


class DemoInterrupted(Exception):
    """An earlier ``ledger demo`` stopped before it had added everyone."""

    def __init__(self, added: int, *, postgres: bool, whole: bool = True) -> None:
        self.added = added
        start_again = (
            "drop the PostgreSQL schema or database it is in (LEDGER_DATABASE_URL) and keep "
            "LEDGER_DATA_DIR, which holds the keys" if postgres else
            "remove the data directory (LEDGER_DATA_DIR; ./var for `make run`), which should "
            "hold only demo data")
        super().__init__(
            f"an earlier demo load did not finish (it was stopped, or it is still running): "
            f"{added} of its {len(_stories())} fictional participants "
            f"{'were added whole' if whole else 'are registered'}, and a stopped load "
            f"cannot be completed in place. For a whole demo, {start_again}, and run the demo "
            "again")


class DemoRefused(Exception):
    """The ledger already holds people the demo did not add."""

    def __init__(self, people: int) -> None:
        self.people = people
        super().__init__(
            f"this ledger already holds {people} participant(s) the demo did not add: its "
            "twelve fictional people would sit beside them in a log that cannot forget them, "
            "and in every report. Load the demo into a new LEDGER_DATA_DIR (on PostgreSQL, a "
            "new ?schema=) instead; nothing was changed")


def load_demo(ledger: Ledger) -> bool:
    """Add the twelve demo participants once; False if they are already there.

    The start, each person once whole, and the end are recorded. A load stopped midway (Ctrl-C,
    a crash) is not carried on, since the person it was adding may be half made: running the
    demo again raises ``DemoInterrupted`` instead of saying the demo is there."""
    stories = _stories()
    if ledger.claimed("demo_complete"):
        return False
    if ledger.claimed("demo_loaded") and not ledger.claimed("demo_started"):
        # Loaded by a version that recorded only the start: whole if everyone is there.
        added = len(ledger.participant_ids())
        if added < len(stories):
            raise DemoInterrupted(added, postgres=ledger.sql.is_postgres, whole=False)
        ledger.claim_once("demo_complete")
        return False
    if not ledger.claimed("demo_started") and (people := len(ledger.participant_ids())):
        raise DemoRefused(people)  # (a real study's ledger: fictional people stay for ever)
    if not ledger.claim_once("demo_started"):  # (one load at a time wins this)
        raise DemoInterrupted(_whole(ledger), postgres=ledger.sql.is_postgres)
    ledger.claim_once("demo_loaded")  # what an earlier version looks for: it loads no second demo
    for number, story in enumerate(stories, 1):
        story(ledger)
        ledger.claim_once(f"demo_person:{number}")
    ledger.claim_once("demo_complete")
    return True


def _whole(ledger: Ledger) -> int:
    """How many demo participants a load has recorded as whole."""
    rows = ledger.sql.query("SELECT COUNT(*) AS n FROM {t}ledger_meta WHERE name LIKE %s",
                            ("demo_person:%",))
    return int(rows[0]["n"])
