"""Every CRM timestamp format leadscore reads, parsed in one place into aware UTC datetimes.

Salesforce: ``2024-05-01T10:00:00.000+0000`` (no colon in the offset), dates ``2024-05-01``.
HubSpot: ISO 8601 with ``Z`` (``2024-05-01T10:00:00.123Z``) or epoch milliseconds (``1714557600123``).
HTTP: the RFC 7231 ``Date`` header (``Wed, 01 May 2024 10:00:00 GMT``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime

from connectors.errors import BadRecord

_OFFSET_NO_COLON = re.compile(r"([+-])(\d{2})(\d{2})$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A plausible CRM timestamp: anything outside is a data-quality fault, not a real event time.
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def parse_crm_datetime(value: object, field: str = "timestamp") -> datetime:
    """Parse a CRM datetime (ISO 8601 in any CRM flavour, a date, or epoch milliseconds) to UTC.

    Raises :class:`BadRecord` (reason ``unparsable_timestamp``) naming ``field`` when the value is
    empty, malformed or implausible (before 1970 or after 2200). Naive values are taken as UTC.
    """
    parsed = _parse(value)
    if parsed is None or not (_EARLIEST <= parsed < _LATEST):
        raise BadRecord("unparsable_timestamp", f"{field}={str(value)[:64]!r}")
    return parsed


def parse_optional_datetime(value: object, field: str = "timestamp") -> datetime | None:
    """Like :func:`parse_crm_datetime`, but empty values (None, "") give None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_crm_datetime(value, field)


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch_ms(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"-?\d{10,}", text):
        return _from_epoch_ms(float(text))
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _OFFSET_NO_COLON.sub(r"\1\2:\3", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _from_epoch_ms(ms: float) -> datetime | None:
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        return None


def parse_http_date(value: str | None) -> datetime | None:
    """Parse an HTTP ``Date`` header to UTC; None when absent or malformed."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def soql_datetime(when: datetime) -> str:
    """A SOQL datetime literal (unquoted, UTC, milliseconds): ``2024-05-01T10:00:00.000Z``."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def salesforce_rest_datetime(when: datetime) -> str:
    """A dateTime as the Salesforce REST API writes it: ``2024-05-01T10:00:00.000+0000`` (Bulk 2.0
    CSV results write ``...Z``; the connector re-encodes them so both paths store the same raw)."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch (HubSpot search filter values)."""
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def iso_utc(when: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` (HubSpot events API parameters, logs)."""
    return soql_datetime(when)
