"""ARF, X-ARF and CSV parsing: the shipped samples (from RFC 5965's examples and
the X-ARF v4 samples) and the errors that name the line or field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgectl.controller.reports import ParseError, arf, csvfeed, xarf

DATA = Path(__file__).parent.parent / "data" / "reports"


def test_rfc5965_full_example() -> None:
    report = arf.parse((DATA / "rfc5965-example.eml").read_bytes())
    assert str(report.address) == "192.0.2.1"
    assert report.cls == "spam"  # Feedback-Type: abuse
    # Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT (UTC-4)
    assert report.at == datetime(2005, 3, 8, 18, 0, tzinfo=UTC)
    assert report.message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"
    assert report.detail["user_agent"] == "SomeGenerator/1.0"
    assert report.detail["subject"] == "Earn money"
    assert report.format == "arf"


def test_rfc5965_minimal_example_with_rfc822_headers_part() -> None:
    report = arf.parse((DATA / "rfc5965-minimal.eml").read_bytes())
    assert str(report.address) == "100.64.0.7"
    # No Arrival-Date: the report's own Date.
    assert report.at == datetime(2026, 3, 1, 3, 20, tzinfo=UTC)
    assert report.message_id == "8787KJKJ3K4J3K4J3K4J3.mail@example.net"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (("Feedback-Type: abuse", "Feedback-Type: spammy"), "Feedback-Type"),
        (("Source-IP: 192.0.2.1\r\n", ""), "Source-IP"),
        (("Source-IP: 192.0.2.1", "Source-IP: 192.0.2.300"), "Source-IP"),
        (("Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT", "Arrival-Date: yesterday"), "Arrival-Date"),
        (("message/feedback-report", "text/plain"), "message/feedback-report"),
        (("multipart/report;", "multipart/mixed;"), "Content-Type"),
    ],
)
def test_arf_errors_name_the_field(edit: tuple[str, str], where: str) -> None:
    raw = (DATA / "rfc5965-example.eml").read_bytes().decode().replace(*edit)
    assert raw != (DATA / "rfc5965-example.eml").read_bytes().decode()
    with pytest.raises(ParseError) as caught:
        arf.parse(raw.encode())
    assert where in caught.value.where


def test_xarf_samples() -> None:
    spam = xarf.parse(json.loads((DATA / "xarf-spam.json").read_text()))
    assert (str(spam.address), spam.cls, spam.format) == ("100.64.0.7", "spam", "xarf")
    assert spam.at == datetime(2026, 3, 1, 3, 10, tzinfo=UTC)
    assert spam.message_id == "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert spam.detail["reporter"] == "Example Anti-Spam Service"
    scan = xarf.parse(json.loads((DATA / "xarf-port-scan.json").read_text()))
    assert scan.cls == "scan" and scan.informational


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("xarf_version", "3", "xarf_version"),
        ("timestamp", "2026-03-01T03:10:00", "timestamp"),  # no zone
        ("source_identifier", "example.net", "source_identifier"),
        ("source_identifier", "100.64.0.0/24", "source_identifier"),
        ("type", "telepathy", "type"),
        ("report_id", 7, "report_id"),
    ],
)
def test_xarf_errors_name_the_field(field: str, value: object, where: str) -> None:
    data = json.loads((DATA / "xarf-spam.json").read_text())
    data[field] = value
    with pytest.raises(ParseError) as caught:
        xarf.parse(data, "[3].")
    assert caught.value.where == f"[3].{where}"


def test_shadowserver_csv_with_one_class_for_the_file() -> None:
    text = (DATA / "shadowserver-open-resolver.csv").read_text()
    found = csvfeed.parse(text, "open-service")
    assert [(str(r.address), r.cls) for r in found] == [
        ("100.64.0.7", "open-service"),
        ("100.64.0.9", "open-service"),
    ]
    assert found[0].at == datetime(2026, 3, 1, 3, 12, 44, tzinfo=UTC)
    # Its own "tag" column is not our vocabulary: without ?class= that is line 2.
    with pytest.raises(ParseError) as caught:
        csvfeed.parse(text)
    assert caught.value.where == "line 2: class"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "line 1"),
        ("when,who\n", "line 1"),
        (
            "address,time,class\n100.64.0.1,2026-03-01T00:00:00Z,spam\nnope,x,spam\n",
            "line 3: address",
        ),
        ("address,time,class\n100.64.0.1,2026-03-01T00:00:00,spam\n", "line 2: time"),
        ("address,time,class\n100.64.0.1,2026-03-01T00:00:00Z,eggs\n", "line 2: class"),
        ("address,time,class\n100.64.0.1,2026-03-01T00:00:00Z\n", "line 2"),
    ],
)
def test_csv_errors_name_the_line(text: str, where: str) -> None:
    with pytest.raises(ParseError) as caught:
        csvfeed.parse(text)
    assert caught.value.where == where


def test_csv_unix_times_and_blank_lines() -> None:
    text = "ip,timestamp,type,id\n100.64.0.1,1772334000,spam,m1\n\n2001:db8::1,1772334001,botnet,\n"
    found = csvfeed.parse(text)
    assert [r.message_id for r in found] == ["m1", None]
    assert found[0].at == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert str(found[1].address) == "2001:db8::1"
