"""Field-level normalisation shared by both CRMs, and the lead ``inputs_hash``.

Decisions per kind of field (docs/sync.md has the table):

* optional text: junk placeholders ("N/A", "Select", "-", "null", ...) become NULL; whitespace is
  trimmed; values longer than the column are truncated (never a reason to drop a lead);
* e-mail: lower-cased; a value without ``local@domain.tld`` becomes NULL;
* whole numbers and money: junk or unparsable text becomes NULL; a *negative* or *absurd*
  magnitude (a head count above 5 million, revenue above 10 trillion) is quarantined: it is a
  typo that would mislead the model and there is no safe guess;
* ids and the modification/creation stamps are required: missing or unparsable → quarantine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from datetime import datetime
from typing import Any

from connectors.base import LeadRecord
from connectors.errors import BadRecord

JUNK_TOKENS = frozenset({
    "", "n/a", "na", "n.a.", "none", "null", "nil", "-", "--", "---", "?", "??", "unknown", "tbd",
    "select", "select...", "--select--", "-- select --", "--none--", "not provided", "not applicable",
    "undefined", "#n/a", "[not provided]", "not set", "no value",
    "-1", ".", "..", "...",
})
MAX_EMPLOYEES = 5_000_000
MAX_REVENUE = 1e13
_EMAIL = re.compile(r"^[^@\s]+@([a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})$")
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "hotmail.com", "outlook.com",
    "live.com", "msn.com", "aol.com", "icloud.com", "me.com", "mac.com", "gmx.de", "gmx.net",
    "web.de", "proton.me", "protonmail.com", "mail.com", "yandex.ru", "qq.com", "163.com",
})
# Legal-form words, matched as whole words after NFKC + casefold (so "GmbH", "ＧＭＢＨ" and "gmbh"
# are one word; \b is Unicode-aware, so Cyrillic forms work the same way).
_LEGAL_SUFFIXES = re.compile(
    r"\b(incorporated|inc|llc|l\.l\.c|ltd|limited|gmbh|mbh|ag|sa|s\.a|sas|sarl|s\.a\.r\.l|bv|b\.v|plc|corp|"
    r"corporation|co|company|pty|oy|ab|srl|spa|s\.p\.a|kg|kgaa|ohg|ug|nv|se|group|holdings?|"
    r"ооо|оао|зао|пао|ао|ип|тов|пат)\b\.?",
)
# Legal forms written without spaces (Japanese, Chinese): stripped where they start or end the name.
_CJK_LEGAL_FORMS = ("股份有限公司", "有限责任公司", "有限責任公司", "有限公司", "株式会社", "有限会社", "合同会社",
                    "(株)", "(有)", "控股", "集团", "集團", "公司")
# Left dangling when a legal form goes ("Müller GmbH & Co. KG" -> "müller and"): dropped at the end.
_TRAILING_JOINERS = frozenset({"and", "und", "et", "y", "e", "i"})
# Fields of the lead that feed the model: their hash decides whether the lead needs rescoring.
# Not included: modification stamps, owner (routing writes it), raw payloads, and any score field
# leadscore itself writes back (those never appear among these normalised columns).
INPUT_FIELDS: tuple[str, ...] = (
    "email", "title", "company", "company_key", "industry", "employees", "annual_revenue", "country",
    "lead_source", "campaign", "status", "is_converted", "converted_at", "crm_created_at", "is_deleted",
    "merged_into_crm_id", "attributes",
)


def clean_text(value: object, max_len: int = 255) -> str | None:
    """Trimmed text, NULL for junk placeholders, truncated to ``max_len``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        text = str(value)
    elif isinstance(value, str):
        text = " ".join(value.split())
    else:
        return None
    if text.lower() in JUNK_TOKENS:
        return None
    return text[:max_len]


def clean_email(value: object) -> str | None:
    """Lower-cased e-mail, or NULL when it is not ``local@domain.tld``."""
    text = clean_text(value, 320)
    if text is None:
        return None
    text = text.lower()
    return text if _EMAIL.match(text) else None


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1]


def company_key(company: str | None, email: str | None) -> str | None:
    """The key that groups a buying committee: the normalised company name, else the corporate
    e-mail domain (free-mail domains give NULL).

    The name keeps the letters and digits of every alphabet: Unicode NFKC (full-width and
    compatibility forms fold to one spelling) and casefold ("Straße" and "STRASSE" meet), legal
    forms and punctuation removed ("Société Générale S.A." -> "société générale",
    "ООО «Сбербанк»" -> "сбербанк", "トヨタ自動車株式会社" -> "トヨタ自動車").
    """
    if company:
        name = unicodedata.normalize("NFKC", company).casefold().replace("&", " and ")
        previous = None
        while previous != name:  # "…集团控股有限公司": several forms in a row
            previous = name
            for form in _CJK_LEGAL_FORMS:
                name = name.strip().removeprefix(form).removesuffix(form)
        name = _LEGAL_SUFFIXES.sub(" ", name)
        # Letters (L*), combining marks (M*, e.g. Devanagari vowel signs) and digits (N*) stay.
        kept = "".join(ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in name)
        words = kept.split()
        while words and words[-1] in _TRAILING_JOINERS:
            words.pop()
        if words:
            return " ".join(words)[:255]
    domain = email_domain(email)
    if domain and domain not in FREEMAIL_DOMAINS:
        return domain[:255]
    return None


def _number_text(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(",", "").replace("$", "").replace("_", "")
        if text.lower() in JUNK_TOKENS:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def clean_employees(value: object, field: str = "employees") -> int | None:
    """A head count: junk → NULL; negative or above 5 million → :class:`BadRecord` (absurd_value)."""
    number = _number_text(value)
    if number is None:
        return None
    if number < 0 or number > MAX_EMPLOYEES:
        raise BadRecord("absurd_value", f"{field}={value!r}")
    return int(round(number))


def clean_revenue(value: object, field: str = "annual_revenue") -> float | None:
    """Annual revenue in the CRM's currency: junk → NULL; negative or above 1e13 → BadRecord."""
    number = _number_text(value)
    if number is None:
        return None
    if number < 0 or number > MAX_REVENUE:
        raise BadRecord("absurd_value", f"{field}={value!r}")
    return number


def clean_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y")
    if isinstance(value, int | float):
        return value != 0
    return False


def require_id(value: object, field: str = "Id") -> str:
    """A CRM id; missing or empty → :class:`BadRecord` (missing_id)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRecord("missing_id", f"{field}={value!r}")
    return value.strip()[:64]


def mapped_attributes(source: dict[str, Any], field_map: dict[str, str]) -> dict[str, Any]:
    """``lead.attributes`` from the configured mapping (CRM field → feature name); junk → None."""
    out: dict[str, Any] = {}
    for crm_field, feature in field_map.items():
        value = source.get(crm_field)
        if isinstance(value, bool) or value is None:
            out[feature] = value
        elif isinstance(value, int | float):
            out[feature] = value if math.isfinite(float(value)) else None
        else:
            out[feature] = clean_text(value, 1000)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def inputs_hash(lead: LeadRecord) -> str:
    """sha256 over the normalised fields that feed the model (:data:`INPUT_FIELDS`)."""
    # Read the fields directly: dataclasses.asdict deep-copies the whole record, raw CRM payload
    # included (it was 3-4 % of the demo's main thread); json.dumps serialises the same values.
    payload = {name: _jsonable(getattr(lead, name)) for name in INPUT_FIELDS}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
