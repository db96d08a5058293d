"""Money is integer pence in GBP. Amounts arrive as strings in pounds ("25.00")."""

from __future__ import annotations

import re
from decimal import Decimal

from .errors import InvalidAmount, UnsupportedCurrency

CURRENCY = "GBP"
# Digits with an optional decimal part ("25", "25.00"; "-25.00" and "25.001" are read so that the
# error can say what is wrong with them). No exponents, currency signs, separators or spaces.
NUMBER = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,12})?\Z")
# How an amount is written (the API's published pattern): up to 9 digits, at most 2 after the point.
WRITTEN = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?\Z")
MAX_PENCE = 10**9  # £10,000,000: far above any real line; guards against absurd input


def parse_pence(amount: object, *, field: str = "amount") -> int:
    """Convert "25.00" (str or Decimal) to 2500; refuse floats, fractions of a penny, zero,
    negatives, and any other spelling (spaces, signs, extra digits)."""
    if isinstance(amount, bool) or isinstance(amount, float):
        raise InvalidAmount(f"{field} must be a string in pounds such as \"25.00\"", field=field)
    if isinstance(amount, int):
        amount = Decimal(amount)
    value: object = amount
    if isinstance(amount, str):
        value = Decimal(amount) if NUMBER.match(amount) else None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidAmount(f"{field} must be an amount in pounds such as \"25.00\"", field=field)
    pence = value * 100
    if pence != pence.to_integral_value():
        raise InvalidAmount(f"{field} must be a whole number of pence", field=field)
    if pence <= 0:
        raise InvalidAmount(f"{field} must be more than zero", field=field)
    if pence > MAX_PENCE:
        raise InvalidAmount(f"{field} is too large", field=field)
    if isinstance(amount, str) and not WRITTEN.match(amount):  # "25.0000", "000000025"
        raise InvalidAmount(f'{field} must be written as pounds and pence, such as "25.00": '
                            "at most two digits after the point", field=field)
    return int(pence)


def check_pence(pence: object, *, field: str = "amount") -> int:
    """Check an already-converted amount is a positive whole number of pence."""
    if isinstance(pence, bool) or not isinstance(pence, int) or pence <= 0 or pence > MAX_PENCE:
        raise InvalidAmount(f"{field} must be a positive whole number of pence", field=field)
    return pence


def check_currency(currency: object) -> str:
    """Only GBP is accepted."""
    if currency != CURRENCY:
        raise UnsupportedCurrency(f"currency must be {CURRENCY}", field="currency")
    return CURRENCY


def format_pence(pence: int) -> str:
    """2500 -> "25.00"."""
    sign = "-" if pence < 0 else ""
    return f"{sign}{abs(pence) // 100}.{abs(pence) % 100:02d}"
