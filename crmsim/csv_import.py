"""Turn a real lead data set (a CSV with one row per lead and a 0/1 outcome) into crmsim people.

Real data sets have outcomes but rarely timestamps, names or activity logs. The import keeps the
CSV's values as the CRM would hold them (including its own junk such as ``"Select"``), invents
what a CRM needs and the file lacks (names, e-mail addresses, owners, creation times spread over
the history with mild growth, deterministic for a seed), and derives activity events from
aggregate columns where a mapping names them. The true conversion probability of such people is
unknown: :meth:`crmsim.funnel.World.truth` reports ``None`` for it; the outcome is the target.

A mapping maps a *role* to a CSV column. Person roles: ``key`` (row id), ``first_name``,
``last_name``, ``email``, ``title``, ``phone``, ``lead_source``, ``company_name``, ``industry``,
``employees``, ``annual_revenue``, ``country``. Activity roles: ``visits`` (web visits),
``page_views_per_visit`` (extra page views per visit), ``time_on_site`` (seconds; spread over the
page views as a ``?dwell=`` query on the page path), ``last_activity`` (one final event whose
type is guessed from the text, detail = the text).
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from crmsim.funnel import DAY, EPOCH, FIRST_NAMES, GROWTH, LAST_NAMES, SDR_OWNERS
from crmsim.model import Company, CRMName, Person

PERSON_ROLES = frozenset({"key", "first_name", "last_name", "email", "title", "phone", "lead_source",
                          "company_name", "industry", "employees", "annual_revenue", "country"})
ACTIVITY_ROLES = frozenset({"visits", "page_views_per_visit", "time_on_site", "last_activity"})

X_EDUCATION_MAPPING: dict[str, str] = {
    "key": "Prospect ID",
    "lead_source": "Lead Source",
    "country": "Country",
    "industry": "Specialization",
    "title": "What is your current occupation",
    "visits": "TotalVisits",
    "page_views_per_visit": "Page Views Per Visit",
    "time_on_site": "Total Time Spent on Website",
    "last_activity": "Last Activity",
}
X_EDUCATION_TARGET = "Converted"

# Activity window before the outcome; converters convert 14-80 days after creation.
ACTIVITY_WINDOW_DAYS = 14
MAX_PAGE_VIEWS = 40
PAGES = ("/", "/courses", "/courses/data-science", "/courses/business-analytics", "/courses/finance",
         "/admissions", "/fees", "/apply", "/blog/career-change", "/faq")

_LAST_ACTIVITY_TYPES = (
    ("email link clicked", "email_click"), ("link clicked", "email_click"), ("email opened", "email_open"),
    ("email", "email_send"), ("sms", "email_send"), ("page visited", "web_visit"),
    ("form submitted", "form_submit"), ("converted to lead", "form_submit"), ("chat", "call"),
    ("phone", "call"), ("approached", "call"), ("unreachable", "call"), ("tradeshow", "campaign_response"),
    ("booth", "campaign_response"),
)


class CsvImportError(ValueError):
    """The CSV or its mapping cannot be imported; the message names the column or role."""


@dataclass
class CsvPopulation:
    """People, companies and derived activity from a CSV, ready for :meth:`World.from_csv`.

    ``activities`` rows are ``(person index, activity type, seconds after creation, detail)``;
    ``converted_offsets[i]`` is seconds from creation to conversion (None: never converted).
    """

    people: list[Person] = field(default_factory=list)
    companies: list[Company] = field(default_factory=list)
    activities: list[tuple[int, str, int, str | None]] = field(default_factory=list)
    converted_offsets: list[int | None] = field(default_factory=list)
    source_keys: list[str] = field(default_factory=list)


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _number(value: str | None, column: str, row: int) -> float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError as exc:
        raise CsvImportError(f"column {column!r} row {row}: {text!r} is not a number") from exc
    return None if math.isnan(number) else number


def _activity_type(text: str) -> str:
    lowered = text.lower()
    for needle, activity_type in _LAST_ACTIVITY_TYPES:
        if needle in lowered:
            return activity_type
    return "web_visit"


def load_people_from_csv(path: str | Path, mapping: dict[str, str], *, target_col: str | None, seed: int,
                         history_days: int = 540, crm_split: float = 0.5) -> CsvPopulation:
    """Read ``path`` into a :class:`CsvPopulation` (deterministic for ``seed``).

    ``target_col`` holds the outcome (1/0, true/false, yes/no); None means no outcome (nobody
    converts). Raises :class:`CsvImportError` for unknown roles, missing columns or bad values.
    """
    unknown = set(mapping) - PERSON_ROLES - ACTIVITY_ROLES
    if unknown:
        raise CsvImportError(f"unknown mapping role(s): {', '.join(sorted(unknown))}")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        for role, column in mapping.items():
            if column not in columns:
                raise CsvImportError(f"mapping role {role!r}: column {column!r} is not in {path}")
        if target_col is not None and target_col not in columns:
            raise CsvImportError(f"target column {target_col!r} is not in {path}")
        rows = list(reader)
    if not rows:
        raise CsvImportError(f"{path} has no data rows")

    rng = random.Random(f"crmsim/{seed}/csv")
    # Creation times: a density rising by GROWTH over the history, assigned in a shuffled order.
    order = list(range(len(rows)))
    rng.shuffle(order)
    g = GROWTH - 1.0
    us = sorted(rng.random() for _ in rows)
    created_s = [min(int((math.sqrt(1.0 + g * (g + 2.0) * u) - 1.0) / g * history_days * DAY),
                     history_days * DAY - 1) for u in us]
    population = CsvPopulation()
    companies: dict[str, Company] = {}
    slot_of = {row_index: slot for slot, row_index in enumerate(order)}
    for row_index, row in enumerate(rows):
        line = row_index + 2  # header is line 1
        get = {role: row.get(column) for role, column in mapping.items()}
        key = _text(get.get("key")) or f"row-{line}"
        first = _text(get.get("first_name")) or rng.choice(FIRST_NAMES)
        last = _text(get.get("last_name")) or rng.choice(LAST_NAMES)
        email = _text(get.get("email")) or f"lead{row_index + 1}@mail.example"
        company_name = _text(get.get("company_name"))
        company_key = None
        if company_name:
            company = companies.get(company_name)
            if company is None:
                company = Company(key=f"C{len(companies) + 1:06d}", name=company_name,
                                  domain=f"company{len(companies) + 1}.example", industry=_text(get.get("industry")),
                                  employees=None, annual_revenue=None, country=_text(get.get("country")))
                companies[company_name] = company
            company_key = company.key
        employees = _number(get.get("employees"), mapping.get("employees", ""), line)
        revenue = _number(get.get("annual_revenue"), mapping.get("annual_revenue", ""), line)
        crm: CRMName = "salesforce" if rng.random() < crm_split else "hubspot"
        person = Person(
            key="", crm=crm, company_key=company_key, first_name=first, last_name=last, email=email,
            title=_text(get.get("title")), phone=_text(get.get("phone")),
            lead_source=_text(get.get("lead_source")), campaign_key=None, status="Open",
            owner_key=rng.choice(SDR_OWNERS),
            created_at=EPOCH + timedelta(seconds=created_s[slot_of[row_index]]),
            company_name=company_name, industry=_text(get.get("industry")),
            employees=int(employees) if employees is not None else None, annual_revenue=revenue,
            country=_text(get.get("country")))
        converted = False
        if target_col is not None:
            raw = (_text(row.get(target_col)) or "").lower()
            if raw in ("1", "1.0", "true", "yes", "y"):
                converted = True
            elif raw not in ("0", "0.0", "false", "no", "n"):
                raise CsvImportError(f"target column {target_col!r} row {line}: {raw!r} is not 0/1")
        person.will_convert = converted
        offset = int(rng.uniform(ACTIVITY_WINDOW_DAYS, 80) * DAY) if converted else None
        index = len(population.people)
        population.people.append(person)
        population.converted_offsets.append(offset)
        population.source_keys.append(key)
        _derive_activity(population, index, get, mapping, line, rng)
    population.companies = list(companies.values())
    return population


def _derive_activity(population: CsvPopulation, index: int, get: dict[str, str | None],
                     mapping: dict[str, str], line: int, rng: random.Random) -> None:
    window = ACTIVITY_WINDOW_DAYS * DAY
    visits = _number(get.get("visits"), mapping.get("visits", ""), line) or 0.0
    per_visit = _number(get.get("page_views_per_visit"), mapping.get("page_views_per_visit", ""), line)
    seconds = _number(get.get("time_on_site"), mapping.get("time_on_site", ""), line) or 0.0
    views_per_visit = max(1, round(per_visit)) if per_visit else 1
    n_visits = max(0, int(visits))
    total_views = min(n_visits * views_per_visit, MAX_PAGE_VIEWS)
    dwell = int(seconds / total_views) if total_views else 0
    emitted = 0
    for _visit in range(n_visits):
        start = int(rng.uniform(0, window - 3600))
        for view in range(views_per_visit):
            if emitted >= total_views:
                break
            page = rng.choice(PAGES)
            detail = f"{page}?dwell={dwell}" if dwell else page
            population.activities.append((index, "web_visit", start + view * max(dwell, 10), detail))
            emitted += 1
    last = _text(get.get("last_activity"))
    if last:
        population.activities.append((index, _activity_type(last), window - 60, last))
