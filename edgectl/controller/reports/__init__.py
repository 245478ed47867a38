"""Abuse reports from outside: ARF (RFC 5965), X-ARF v4 JSON and CSV feeds, parsed
into ``Report`` values.  No I/O and no store here: the store attributes and keeps them."""

from edgectl.controller.reports.model import ParseError, Report

__all__ = ["ParseError", "Report"]
