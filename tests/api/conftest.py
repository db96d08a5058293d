"""A Flask test client around a real Ledger on a temp SQLite file, with one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ledger.api import create_app
from ledger.application import Ledger


class Clock:
    """The ledger's clock, which a test may move forward (link expiry, deadlines)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api_ledger(tmp_path, clock) -> Iterator[Ledger]:
    lg = Ledger({"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_BASE_URL": "https://ledger.example"},
                clock=clock)
    lg.init_study(by="test")
    yield lg
    lg.close()


@pytest.fixture
def app(api_ledger):
    return create_app({"LEDGER": api_ledger, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def tokens(api_ledger) -> dict[str, str]:
    return {role: api_ledger.tokens.create(role, f"test {role}")[1]
            for role in ("staff", "auditor", "admin")}


def load_every_ledger_module() -> None:
    """Import every module of the ``ledger`` package.

    Hypothesis draws about one string or number in twenty from the constants written in the
    project's own modules (not tests, not site-packages) that are loaded at the moment it
    generates. Which ``ledger`` modules are loaded depends on which tests the session collected,
    so a fuzz run with a fixed seed generated different requests alone and in the whole suite.
    With every module loaded, that pool, and so each run, is the same whatever else is collected.
    """
    import importlib
    import pkgutil

    import ledger

    for module in pkgutil.walk_packages(ledger.__path__, "ledger."):
        importlib.import_module(module.name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def staff(tokens) -> dict[str, str]:
    """Authorization header of a staff token."""
    return bearer(tokens["staff"])


@pytest.fixture
def pid(client, staff) -> str:
    """A registered participant's id."""
    response = client.post("/api/v1/participants", headers=staff, json={
        "name": "Ada Example", "email": "ada@example.invalid", "communities": ["Black British"],
        "preferred_contact": "email"})
    assert response.status_code == 201
    return response.json["id"]
