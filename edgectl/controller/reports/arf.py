"""ARF (RFC 5965): a ``multipart/report; report-type=feedback-report`` message.

Parts: a human-readable text, the ``message/feedback-report`` fields, and
the reported message (``message/rfc822`` or ``text/rfc822-headers``).  The
stdlib email package parses the MIME; the feedback fields are a header
block, which it parses as a sub-message.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime
from email.message import Message

from edgectl.controller.reports.model import (
    ParseError,
    Report,
    bounded,
    check_id,
    parse_address,
)

# RFC 5965 section 7.3 and RFC 6591 (auth-failure): Feedback-Type -> class.
FEEDBACK_TYPES = {
    "abuse": "spam",  # "unsolicited email or some other kind of email abuse"
    "fraud": "phishing",
    "virus": "malware",
    "other": "other",
    "not-spam": "not-spam",
    "auth-failure": "auth-failure",
}


def _feedback_fields(message: Message) -> Message:
    for part in message.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        # The parser reads a message/* body as a list holding one message
        # (here: the fields); a malformed one may come back as plain text.
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        if isinstance(payload, str):
            return email.message_from_string(payload, policy=email.policy.compat32)
    raise ParseError("message/feedback-report", "no feedback-report part (is this ARF?)")


def _original_headers(message: Message) -> Message | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text, policy=email.policy.compat32)
    return None


def _date(text: str | None, where: str) -> datetime:
    if not text:
        raise ParseError(where, "missing")
    try:
        parsed = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError) as error:
        raise ParseError(where, f"{text.strip()!r} is not an RFC 5322 date") from error
    if parsed.tzinfo is None:
        # RFC 5322 "-0000": the zone is unknown; UTC is its documented reading.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse(raw: bytes) -> Report:
    """One ARF message.  The event's time is Arrival-Date (Received-Date in
    early drafts), else the report's own Date; the address is Source-IP."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report":
        raise ParseError("Content-Type", f"{message.get_content_type()}: expected multipart/report")
    fields = _feedback_fields(message)
    where = "message/feedback-report"
    feedback = (fields.get("Feedback-Type") or "").strip().lower()
    if not feedback:
        raise ParseError(f"{where}: Feedback-Type", "missing")
    cls = FEEDBACK_TYPES.get(feedback)
    if cls is None:
        raise ParseError(f"{where}: Feedback-Type", f"unknown type {feedback!r}")
    source = fields.get("Source-IP")
    if source is None:
        raise ParseError(f"{where}: Source-IP", "missing: the report names no sender address")
    address = parse_address(source, f"{where}: Source-IP")
    arrival = fields.get("Arrival-Date") or fields.get("Received-Date")
    when = f"{where}: Arrival-Date" if arrival is not None else "Date"
    at = _date(arrival if arrival is not None else message.get("Date"), when)
    original = _original_headers(message)
    message_id = None
    if original is not None and original.get("Message-ID"):
        message_id = check_id(str(original.get("Message-ID")), "message/rfc822: Message-ID")
    elif fields.get("Original-Envelope-Id"):
        message_id = check_id(
            str(fields.get("Original-Envelope-Id")), f"{where}: Original-Envelope-Id"
        )
    detail = {
        "user_agent": bounded(fields.get("User-Agent")),
        "reporter": bounded(message.get("From")),
        "subject": None if original is None else bounded(original.get("Subject")),
        "original_mail_from": bounded(fields.get("Original-Mail-From")),
        "reported_domain": bounded(fields.get("Reported-Domain")),
    }
    return Report(
        address=address,
        at=at,
        cls=cls,
        format="arf",
        message_id=message_id,
        detail={k: v for k, v in detail.items() if v is not None},
        where=when,
    )
