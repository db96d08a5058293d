"""The report in four formats from the same data: JSON and CSV for machines, HTML and PDF for
people (the PDF is the HTML, printed by WeasyPrint). Every number in them comes from one dict."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape

FORMATS = {
    "json": "application/json",
    "csv": "application/zip",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
EXTENSIONS = {"json": "json", "csv": "zip", "html": "html", "pdf": "pdf"}
_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]))


# The CSV zip's files, in order (``csv_tables``); one of them alone is ``section``'s CSV.
CSV_SECTIONS = ("summary", "consent_totals", "consent_by_participant",
                "grants_without_registered_form", "use_after_withdrawal", "use_without_consent",
                "late_withdrawals", "open_obligations", "done_obligations", "payment_rates",
                "payments_by_method", "payments_paid_differently", "payments_outstanding",
                "access_needs", "erasures", "checkpoint")
SECTION_CONTENT_TYPE = "text/csv; charset=utf-8"


def render(report: dict[str, Any], fmt: str, section: str | None = None) -> bytes:
    """The report's bytes in ``fmt`` (json, csv, html or pdf); with ``section`` (csv only), the
    one CSV file of that section, as it is in the zip."""
    if section is not None:
        if fmt != "csv":
            raise ValueError("a section is one CSV file: format must be csv")
        return _csv_text(csv_tables(report)[section]).encode()
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv_zip(report)
    if fmt == "html":
        return to_html(report).encode()
    if fmt == "pdf":
        return to_pdf(report)
    raise ValueError(fmt)


def to_json(report: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, so equal reports are equal bytes. Encoded by orjson (the
    library's ``json`` took 40 % of a current report's time over a million events), indented
    by two spaces (one, before 2 December 2026: a report signed then keeps its own bytes)."""
    return orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
                        | orjson.OPT_NON_STR_KEYS)


def csv_tables(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """One table per section (what the CSV zip holds)."""
    consent = report["consent"]
    scopes = list(consent["totals"])
    pay, needs, obligations = report["payments"], report["access_needs"], report["obligations"]
    return {
        "summary": [{"name": k, "value": v} for k, v in _summary(report).items()],
        "consent_totals": [{"scope": s, **consent["totals"][s]} for s in scopes],
        "consent_by_participant": [
            {"reference": p["reference"], "erased": p["erased"], **p["scopes"]}
            for p in consent["by_participant"]],
        "grants_without_registered_form": report["grants_without_registered_form"],
        "use_after_withdrawal": report["use_after_withdrawal"],
        "use_without_consent": report["use_without_consent"],
        "late_withdrawals": report["late_withdrawals"],
        "open_obligations": obligations["open"],
        "done_obligations": obligations["done"],
        "payment_rates": pay["rate_table"],
        "payments_by_method": [{"method": m, **v} for m, v in pay["by_method"].items()],
        "payments_paid_differently": pay["paid_differently"],
        "payments_outstanding": pay["outstanding"],
        "access_needs": needs["items"],
        "erasures": report["erasures"],
        "checkpoint": [_checkpoint_row(report["checkpoint"])],
    }


def _checkpoint_row(cp: dict[str, Any]) -> dict[str, Any]:
    v = cp["verification"] or {}
    return {"size": cp["size"], "root": cp["root"], "time": cp["time"],
            "signature": cp["signature"], "last_verified_at": v.get("at"),
            "last_verified_size": v.get("size"), "last_verified_ok": v.get("ok"),
            "last_verified_first_bad_position": v.get("first_bad_position"),
            "last_verified_signature_valid": v.get("signature_valid")}


def verification_text(cp: dict[str, Any]) -> str:
    """The last full verification in a word: passed, failed, or never run; or, if the record
    of it is not signed by this ledger, that it cannot be trusted."""
    v = cp["verification"]
    if v is None:
        return "never run"
    if not v["signature_valid"]:
        return "record not signed by this ledger"
    return "passed" if v["ok"] else "failed"


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    pay, needs, obligations = report["payments"], report["access_needs"], report["obligations"]
    return {
        "as_of": report["as_of"], "study": report["study"]["name"],
        "participants_registered": report["participants"]["registered"],
        "participants_erased": report["participants"]["erased"],
        "grants_without_registered_form": len(report["grants_without_registered_form"]),
        "use_after_withdrawal": len(report["use_after_withdrawal"]),
        "use_without_consent": len(report["use_without_consent"]),
        "late_withdrawals": len(report["late_withdrawals"]),
        "obligations_open": obligations["open_count"],
        "obligations_done": obligations["done_count"],
        "obligations_median_days_to_done": obligations["median_days_to_done"],
        "payments_paid": pay["paid"], "payments_paid_total": pay["paid_total"],
        "payments_paid_at_rate": pay["paid_at_rate"],
        "payments_paid_differently": len(pay["paid_differently"]),
        "payments_declined": pay["declined"], "payments_reduced": pay["reduced"],
        "payments_reversed": pay["reversed"],
        "payments_outstanding": len(pay["outstanding"]),
        "access_needs_requested": needs["requested"], "access_needs_met": needs["met"],
        "access_needs_partly_met": needs["partly_met"], "access_needs_not_met": needs["not_met"],
        "access_needs_open": needs["open"],
        "access_needs_erased_before_outcome": needs["erased_before_outcome"],
        "access_needs_median_days_to_meet": needs["median_days_to_meet"],
        "erasures": len(report["erasures"]),
        "log_events": report["log"]["events"], "log_position": report["log"]["position"],
        "checkpoint_size": report["checkpoint"]["size"],
        "log_last_verification": verification_text(report["checkpoint"]),
    }


def to_csv_zip(report: dict[str, Any]) -> bytes:
    """A zip of CSV files, one per section (fixed timestamps, so equal reports zip equally)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, rows in csv_tables(report).items():
            info = zipfile.ZipInfo(f"{name}.csv", date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, _csv_text(rows))
    return out.getvalue()


def _csv_text(rows: list[dict[str, Any]]) -> str:
    """One section as CSV: a header and a line a row (nothing at all for no rows)."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    return text.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # Cells a spreadsheet would run as a formula are quoted (CSV injection); ours are labels.
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bars(items: list[tuple[str, list[tuple[str, int]]]], colours: dict[str, str]
          ) -> dict[str, Any]:
    """A horizontal stacked bar chart as SVG-ready numbers (no script, printable)."""
    most = max([sum(v for _, v in parts) for _, parts in items] + [1])
    rows = []
    for i, (label, parts) in enumerate(items):
        x, segments = 0.0, []
        for name, value in parts:
            width = 300 * value / most
            if value:
                segments.append({"x": 140 + x, "width": width, "colour": colours[name],
                                 "name": name, "value": value})
            x += width
        rows.append({"y": 10 + i * 26, "label": label, "segments": segments,
                     "total": sum(v for _, v in parts)})
    return {"rows": rows, "height": 20 + len(items) * 26, "legend": list(colours.items())}


STATE_COLOURS = {"given": "#1b7837", "requested": "#8c6d00", "withdrawn": "#b2182b",
                 "refused": "#5e3c99", "expired": "#4d4d4d"}


def to_html(report: dict[str, Any]) -> str:
    """A page a person can read (and print), with two charts drawn as inline SVG."""
    consent = report["consent"]["totals"]
    consent_chart = _bars([(s, [(st, n) for st, n in counts.items()])
                           for s, counts in consent.items()], STATE_COLOURS)
    methods = report["payments"]["by_method"]
    palette = ["#2166ac", "#1b7837", "#8c6d00", "#b2182b", "#5e3c99", "#4d4d4d", "#01665e"]
    method_colours = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    method_chart = _bars([(m, [(m, v["count"])]) for m, v in methods.items()], method_colours)
    as_of = datetime.fromisoformat(report["as_of"])
    return _templates.get_template("compliance.html").render(
        r=report, summary=_summary(report), consent_chart=consent_chart,
        method_chart=method_chart, as_of_text=as_of.strftime("%d %B %Y, %H:%M %Z"))


def to_pdf(report: dict[str, Any]) -> bytes:
    """The HTML page printed to PDF."""
    from weasyprint import HTML  # imported here: it loads Pango, which only the PDF needs

    return HTML(string=to_html(report)).write_pdf()  # type: ignore[no-any-return]
