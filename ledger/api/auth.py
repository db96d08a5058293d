"""Bearer-token authentication and the role check every API view declares."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized

from ..privacy.tokens import TokenInfo
from .parsing import refuse_unknown_query_parameters

F = TypeVar("F", bound=Callable[..., Any])
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _caller() -> TokenInfo:
    """The token's owner. A valid token always gets in; once an address has failed too often,
    its further failures get 429 instead of 401 (so staff behind a shared proxy are never
    locked out by someone else's guessing)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    info = None
    if scheme.lower() == "bearer" and token.strip():
        info = current_app.extensions["ledger"].tokens.lookup(token.strip())
    if info is None:
        limiter = current_app.extensions["auth_failures"]
        client = request.remote_addr or "unknown"
        wait = limiter.retry_after(client)
        limiter.record(client)
        if wait:
            too_many = TooManyRequests("Too many failed sign-ins from here; try again later.")
            too_many.data = {"headers": {"Retry-After": str(wait)}}  # type: ignore[attr-defined]
            raise too_many
        error = Unauthorized()
        error.data = {"headers": {"WWW-Authenticate": 'Bearer realm="ledger"'}}  # type: ignore[attr-defined]
        raise error
    return info


def roles_sentence(roles: tuple[str, ...]) -> str:
    """How an operation's description names the roles it allows ("Role: staff or auditor.")."""
    return "Role: " + " or ".join(roles) + "."


def require(*roles: str) -> Callable[[F], F]:
    """Allow the view only to valid tokens of these roles: 401 without one, 403 for others.
    Then, as every API view passes here, refuse query parameters the view does not document.

    The roles are also added to the view's docstring, from which flask-smorest writes the
    operation's description in the OpenAPI document: the document names the roles this check
    enforces, so the two cannot drift apart."""
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            info = _caller()
            g.token_id = info.id
            if info.role not in roles:
                raise Forbidden()
            g.actor = f"{info.role}:{info.id}"  # names stay in the token table, not the log
            refuse_unknown_query_parameters()
            return view(*args, **kwargs)
        wrapper.required_roles = roles  # type: ignore[attr-defined]
        wrapper.__doc__ = "\n\n".join(filter(None, [inspect.cleandoc(view.__doc__ or ""),
                                                     roles_sentence(roles)]))
        return wrapper  # type: ignore[return-value]
    return decorate


def actor() -> str:
    """Who is acting, as recorded in events: role and token id."""
    return str(g.actor)
