"""The ledger's domain: aggregates, their events and errors. Pure Python, no I/O, no clock."""

from .base import REDACTED, Redacted, apply_events, derived_id, is_redacted
from .errors import LedgerError
from .participant import Participant, PersonalDetails
from .remuneration import Payment
from .study import Activity, ConsentForm, Scope, Study

__all__ = [
    "REDACTED", "Activity", "ConsentForm", "LedgerError", "Participant", "Payment",
    "PersonalDetails", "Redacted", "Scope", "Study", "apply_events", "derived_id", "is_redacted",
]
