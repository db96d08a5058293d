"""The words the ledger accepts for its enumerated fields (from the design's vocabularies)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .errors import InvalidChoice

CONSENT_METHODS = ("online", "written", "verbal_recorded", "bsl", "easy_read", "supporter")
PAYMENT_METHODS = (
    "bank_transfer", "voucher", "gift_card", "cash", "charity_donation", "third_party", "other",
)
STAFF_WITHDRAWAL_CHANNELS = (
    "in_person", "phone", "email", "video_call", "letter", "supporter", "other",
)
PARTICIPANT_LINK = "participant_link"  # the channel only the person's own link records
PAYEES = ("self", "third_party", "charity")
ATTRIBUTIONS = ("named", "anonymous")
NEED_OUTCOMES = ("met", "partly_met", "not_met")
CONSENT_STATES = ("given", "requested", "withdrawn", "refused", "expired")


def check_choice(field: str, value: object, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise ``InvalidChoice`` naming the field."""
    options = tuple(allowed)
    if not isinstance(value, str) or value not in options:
        raise InvalidChoice(f"{field} must be one of: {', '.join(options)}", field=field)
    return value


# Text is plain text: no control characters (tabs and line breaks are fine) and nothing that reads
# as markup. Apostrophes, quotes and semicolons are ordinary in names and notes, so text that merely
# looks like SQL is kept as written; statements are always parameterised.
CONTROL = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"  # C0 and C1 controls (tab and line breaks allowed)
    r"\ud800-\udfff"  # lone surrogates: not text, and cannot be stored as UTF-8
    r"\u202a-\u202e\u2066-\u2069]"  # bidirectional overrides, which can disguise text
)
INVISIBLE = " \t\r\n\u00a0\u200b\ufeff"  # trimmed; a value of only these is empty
MARKUP = re.compile(r"</?[A-Za-z!?]")  # what a browser would read as the start of a tag


# Unicode categories refused in a name or an identifier shown on one line (a token's name, a form
# version): controls (tabs, line breaks), line and paragraph separators, format characters
# (zero-width spaces and joiners, direction marks, byte order marks), surrogates, private-use
# and unassigned code points.
NOT_ON_ONE_LINE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def check_text(field: str, value: object, *, max_length: int, required: bool = True,
               one_line: bool = False) -> str | None:
    """Return trimmed plain text of at most ``max_length`` characters; None if optional and empty.
    ``one_line``: an identifier, shown as it is on one line: no tab, line break or invisible
    character anywhere in it."""
    from .errors import InvalidText

    if value is None or (isinstance(value, str) and not value.strip(INVISIBLE)):
        if required:
            raise InvalidText(f"{field} is required", field=field)
        return None
    if not isinstance(value, str):
        raise InvalidText(f"{field} must be text", field=field)
    text = value.strip(INVISIBLE)
    if len(text) > max_length:
        raise InvalidText(f"{field} must be at most {max_length} characters", field=field)
    if CONTROL.search(text):
        raise InvalidText(f"{field} must not contain control characters", field=field)
    if one_line and any(unicodedata.category(ch) in NOT_ON_ONE_LINE for ch in text):
        raise InvalidText(f"{field} must be one line of visible text: no tabs, line breaks or "
                          "invisible characters", field=field)
    if MARKUP.search(text):
        raise InvalidText(f"{field} must be plain text, without HTML tags", field=field)
    return text
