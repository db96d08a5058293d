"""What both schemathesis runs share: the study's own names swapped into generated requests.

The OpenAPI document cannot enumerate the study's scopes, activities and form versions (they are
configuration), so nearly every generated consent, use or payment would stop at "unknown scope"
or "unknown activity" and never reach the code behind it, nor a 2xx whose body the document
describes. These hooks put the study's names in three times in four.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .conftest import bearer


def use_the_study_s_names(schema: Any, client: Any, tokens: dict[str, str]) -> None:
    """Register the body and path hooks on ``schema`` (this schema only)."""
    vocabulary = _vocabulary(client, tokens)

    @schema.hook
    def flatmap_body(context, body):
        if context.operation.path.endswith("/payment-arrangements"):
            return _arrangement(body).flatmap(lambda body: _swap_in(vocabulary, body))
        if context.operation.path.endswith("/payment-reductions"):
            # a reduction must be below the rate, which "25.00" (two in three amounts) is not
            return _swap_in(vocabulary | {"amount": ["10.00", "12.50"]}, body)
        return _swap_in(vocabulary, body)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):  # in a stateful run, those no link supplied
        return _swap_in(vocabulary, path_parameters)


def _vocabulary(client, tokens) -> dict[str, list[Any]]:
    """The study's own names. The document cannot enumerate them (they are configuration), and
    random strings would stop nearly every consent and payment at "unknown scope/activity"."""
    study = client.get("/api/v1/study", headers=bearer(tokens["staff"])).json
    return {"scope": [scope["name"] for scope in study["scopes"]],
            "form_version": [form["version"] for form in study["consent_forms"]],
            "activity": [activity["name"] for activity in study["activities"]],
            "amount": [activity["rate"] for activity in study["activities"]] + ["10.00"],
            "attribution": [None]}  # only the scopes that take attribution accept one


def _swap_in(vocabulary: dict[str, list[Any]], value: Any) -> st.SearchStrategy[Any]:
    """Three times in four, replace a generated string under a known name by one of the study's
    (the fourth keeps the generated, likely hostile, one)."""
    if not isinstance(value, dict):
        return st.just(value)
    swaps = {key: st.one_of(st.just(item), *[st.sampled_from(vocabulary[key])] * 3)
             for key, item in value.items() if key in vocabulary and isinstance(item, str)}
    return st.fixed_dictionaries(swaps).map(lambda chosen: {**value, **chosen})


def _arrangement(body: Any) -> st.SearchStrategy[Any]:
    """Three times in four, make an arrangement one of the two the server takes: declined, or
    method, payee and advice all agreed. (The document marks only `activity` required; "all three
    or a decline" is a rule it cannot express, so a generated body almost never meets it.)"""
    if not isinstance(body, dict):
        return st.just(body)
    terms = {"method": "bank_transfer", "payee": "self", "benefits_advice_offered": True}
    agreed = ({key: value for key, value in body.items() if key != "reason"} | terms
              | {key: body[key] for key in terms if key in body} | {"declined": False})
    declined = {key: value for key, value in body.items() if key not in terms} | {"declined": True}
    return st.sampled_from([body, agreed, agreed, declined])


