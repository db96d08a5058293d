"""`ledger tokens`: create prints only the token; list never shows it; revoke stops it."""

from __future__ import annotations

from ledger.application import Ledger
from tests.integration.test_cli import _run


def test_tokens_create_list_and_revoke(store_env):
    _run(store_env, "init")
    created = _run(store_env, "tokens", "create", "--role", "auditor", "--name", "Ethics cttee")
    token = created.stdout.strip()
    listed = _run(store_env, "tokens", "list")
    token_id = listed.stdout.split("\t")[0]

    lg = Ledger(store_env)
    live = lg.tokens.lookup(token)
    lg.close()
    revoked = _run(store_env, "tokens", "revoke", token_id)
    again = _run(store_env, "tokens", "revoke", token_id)
    lg = Ledger(store_env)
    after = lg.tokens.lookup(token)
    lg.close()

    assert created.returncode == 0 and token.startswith("lgr_") and "\n" not in token
    assert len(token) >= 4 + 43  # 256 bits in url-safe base64
    assert token not in listed.stdout and "auditor\tEthics cttee" in listed.stdout
    assert live is not None and live.role == "auditor"
    assert revoked.returncode == 0 and after is None
    assert again.returncode == 1 and "no live token with that id" in again.stderr
    assert "Traceback" not in again.stderr and again.stdout == ""


def test_a_bad_role_or_name_is_refused(store_env):
    _run(store_env, "init")
    bad_role = _run(store_env, "tokens", "create", "--role", "root", "--name", "x")
    bad_name = _run(store_env, "tokens", "create", "--role", "staff", "--name", " ")

    assert bad_role.returncode == 2 and bad_name.returncode == 2
    assert bad_role.stdout == bad_name.stdout == ""
