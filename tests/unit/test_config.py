import pytest

from ledger.config import Settings


def test_defaults():
    settings = Settings.from_env({})

    assert (settings.link_days, settings.base_url, settings.database_url) == (
        180, "http://127.0.0.1:8000", None)


@pytest.mark.parametrize("value", ["0", "-5", "3651", "ten", "1.5"])
def test_a_nonsensical_link_lifetime_is_refused_at_start_up(value):
    with pytest.raises(ValueError) as e:
        Settings.from_env({"LEDGER_LINK_DAYS": value})

    assert "LEDGER_LINK_DAYS" in str(e.value)


def test_a_link_lifetime_in_range_is_used():
    assert Settings.from_env({"LEDGER_LINK_DAYS": "30"}).link_days == 30
