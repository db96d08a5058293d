"""An access need: requested in the person's own words, then met, partly met or not met."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from .errors import NeedAlreadyMet
from .vocab import NEED_OUTCOMES, check_choice, check_text

CATEGORY_MAX = 80
DETAIL_MAX = 2000
NOTE_MAX = 2000


def check_need_request(category: object, detail: object) -> tuple[str, str]:
    """Category is a short label (<= 80 characters), detail free text (<= 2,000)."""
    c = check_text("category", category, max_length=CATEGORY_MAX)
    d = check_text("detail", detail, max_length=DETAIL_MAX, required=False)
    return c or "", d or ""


@dataclass
class AccessNeed:
    """One access need and its outcomes over time."""

    id: UUID
    category: str
    detail: str
    requested_at: datetime
    outcome: str | None = None
    note: str | None = None
    outcome_at: datetime | None = None
    met_at: datetime | None = None
    history: list[dict[str, object]] = field(default_factory=list)

    def check_can_record_outcome(self, outcome: object, note: object) -> tuple[str, str | None]:
        """Any outcome may follow until the need is met; met is final."""
        check_choice("outcome", outcome, NEED_OUTCOMES)
        n = check_text("note", note, max_length=NOTE_MAX, required=False)
        if self.outcome == "met":
            raise NeedAlreadyMet("this access need is already met", field="outcome")
        return str(outcome), n
