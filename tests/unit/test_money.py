from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.errors import InvalidAmount, UnsupportedCurrency
from ledger.domain.money import check_currency, format_pence, parse_pence


@pytest.mark.parametrize("text, pence", [("25.00", 2500), ("25", 2500), ("0.01", 1),
                                         ("7.4", 740), (Decimal("10.50"), 1050)])
def test_amounts_in_pounds_become_whole_pence(text, pence):
    assert parse_pence(text) == pence


@pytest.mark.parametrize("bad", ["0", "0.00", "-25.00", "25.001", "abc", "", "NaN", "Infinity",
                                 25.0, True, None, "1e20", [], "25,00", "1e3", "GBP 25",
                                 "£25", "+25", "25.", ".5", "0x19", "2_500", " 7.4 ", "25\n",
                                 "\u00a025", "25.0000", "00000000025", "١٢"])
def test_amounts_that_are_not_positive_whole_pence_are_refused(bad):
    with pytest.raises(InvalidAmount) as e:
        parse_pence(bad)

    assert e.value.field == "amount"


@settings(deadline=None)  # a garbage-collection pause late in the suite is not a failure
@given(st.integers(min_value=1, max_value=10**9))
def test_formatting_and_parsing_pence_round_trips(pence):
    assert parse_pence(format_pence(pence)) == pence


@pytest.mark.parametrize("currency", ["USD", "gbp", "", None, "EUR"])
def test_currencies_other_than_gbp_are_refused(currency):
    with pytest.raises(UnsupportedCurrency):
        check_currency(currency)


def test_gbp_is_accepted():
    assert check_currency("GBP") == "GBP"
