"""X-ARF v4 (xarf.org): one JSON object per report.

Required here: ``xarf_version`` 4.x, ``report_id``, ``timestamp``,
``source_identifier`` (an IP address), ``category`` and ``type``.  The
(category, type) pair maps to a class; pairs this controller does not know
are refused rather than filed as something they are not.
"""

from __future__ import annotations

from typing import Any

from edgectl.controller.reports.model import (
    ParseError,
    Report,
    bounded,
    check_id,
    parse_address,
    parse_time,
)

TYPES = {
    ("messaging", "spam"): "spam",
    ("messaging", "bulk_messaging"): "spam",
    ("content", "phishing"): "phishing",
    ("content", "malware"): "malware",
    ("content", "fraud"): "fraud",
    ("infrastructure", "botnet"): "botnet",
    ("connection", "bot"): "botnet",
    ("connection", "login_attack"): "login-attack",
    ("connection", "ddos"): "ddos",
    ("connection", "ddos_amplification"): "ddos",
    ("connection", "port_scan"): "scan",
    ("connection", "reconnaissance"): "scan",
    ("connection", "vuln_scanning"): "scan",
    ("connection", "auth_failure"): "auth-failure",
    ("vulnerability", "open"): "open-service",
    ("vulnerability", "cve"): "vulnerable",
    ("vulnerability", "misconfiguration"): "vulnerable",
}


def _text(data: dict[str, Any], name: str, where: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ParseError(f"{where}{name}", "missing or not a string")
    return value


def parse(data: object, where: str = "") -> Report:
    """One X-ARF v4 object; ``where`` prefixes field names (``reports[3].``)."""
    if not isinstance(data, dict):
        raise ParseError(where.rstrip(".") or "body", "expected an X-ARF object")
    version = _text(data, "xarf_version", where)
    if not version.startswith("4"):
        raise ParseError(f"{where}xarf_version", f"{version!r}: only X-ARF v4 is read")
    report_id = _text(data, "report_id", where)
    at = parse_time(_text(data, "timestamp", where), f"{where}timestamp")
    address = parse_address(_text(data, "source_identifier", where), f"{where}source_identifier")
    category = _text(data, "category", where).strip().lower()
    kind = _text(data, "type", where).strip().lower()
    cls = TYPES.get((category, kind))
    if cls is None:
        raise ParseError(f"{where}type", f"unknown X-ARF category/type {category}/{kind}")
    reporter = data.get("reporter")
    detail = {
        "reporter": bounded(reporter.get("org")) if isinstance(reporter, dict) else None,
        "contact": bounded(reporter.get("contact")) if isinstance(reporter, dict) else None,
        "xarf_type": f"{category}/{kind}",
        "subject": bounded(data.get("subject")),
    }
    return Report(
        address=address,
        at=at,
        cls=cls,
        format="xarf",
        message_id=check_id(report_id, f"{where}report_id"),
        detail={k: v for k, v in detail.items() if v is not None},
        where=f"{where}timestamp",
    )
