"""Row factories for tests: connections, leads and activities with sensible defaults.

Each factory adds to the session and flushes (ids are assigned) but never commits: the test's
fixture decides what is rolled back. Pass any model column as a keyword to override a default.
``load_world`` puts a simulated funnel (``crmsim.funnel.World``) straight into the store, no HTTP.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from connectors.lifecycle import lifecycle_of
from scoring.personas import company_key
from store.models import Activity, Connection, Lead

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
_seq = itertools.count(1)


def make_connection(session: Session, name: str | None = None, kind: str = "salesforce") -> Connection:
    """A CRM connection row (unique name by default)."""
    conn = Connection(name=name or f"conn-{next(_seq)}", kind=kind)
    session.add(conn)
    session.flush()
    return conn


def lead_values(connection: Connection, **overrides: Any) -> dict[str, Any]:
    """Column values of a plausible lead; ``overrides`` replace any of them."""
    n = next(_seq)
    created = overrides.get("crm_created_at", BASE_TIME)
    values: dict[str, Any] = {
        "connection_id": connection.id,
        "crm_id": f"00Q{n:012d}",
        "email": f"person{n}@acme{n % 50}.com",
        "first_name": "Alex",
        "last_name": f"Smith{n}",
        "title": "Marketing Manager",
        "company": f"Acme {n % 50} Inc",
        "industry": "Software",
        "employees": 250,
        "annual_revenue": 2.5e7,
        "country": "United States",
        "lead_source": "Web",
        "campaign": None,
        "status": "Open",
        "is_converted": False,
        "converted_at": None,
        "crm_created_at": created,
        "crm_modified_at": created,
        "attributes": {},
        "raw": {},
    }
    values.update(overrides)
    if "company_key" not in overrides:
        values["company_key"] = company_key(values["company"], values["email"])
    return values


def make_lead(session: Session, connection: Connection, **overrides: Any) -> Lead:
    """A lead row; ``is_converted`` follows ``converted_at`` and ``lifecycle`` both, unless given."""
    values = lead_values(connection, **overrides)
    if values["converted_at"] is not None and "is_converted" not in overrides:
        values["is_converted"] = True
    if "lifecycle" not in overrides:
        # As the connectors derive it (statuses aside): deleted/merged, converted, else open.
        values["lifecycle"] = lifecycle_of(deleted=bool(values.get("is_deleted")),
                                           merged_into=values.get("merged_into_crm_id"),
                                           converted=bool(values["is_converted"]), closed=False)
    lead = Lead(**values)
    session.add(lead)
    session.flush()
    return lead


def make_activity(
    session: Session,
    lead: Lead,
    type: str,  # noqa: A002 - the column's name
    occurred_at: datetime,
    detail: str | None = None,
    **overrides: Any,
) -> Activity:
    """An activity of ``lead`` (web_visit with detail "/pricing" is a high-intent visit)."""
    values: dict[str, Any] = {
        "connection_id": lead.connection_id,
        "crm_id": f"00T{next(_seq):012d}",
        "lead_crm_id": lead.crm_id,
        "lead_id": lead.id,
        "type": type,
        "occurred_at": occurred_at,
        "detail": detail,
        "crm_modified_at": occurred_at,
        "raw": {},
    }
    values.update(overrides)
    activity = Activity(**values)
    session.add(activity)
    session.flush()
    return activity


def add_activities(session: Session, lead: Lead, events: Iterable[tuple[str, datetime, str | None]]) -> int:
    """Bulk-add (type, occurred_at, detail) events of one lead; returns how many."""
    rows = [
        Activity(
            connection_id=lead.connection_id,
            crm_id=f"00T{next(_seq):012d}",
            lead_crm_id=lead.crm_id,
            lead_id=lead.id,
            type=t,
            occurred_at=at,
            detail=d,
            crm_modified_at=at,
            raw={},
        )
        for t, at, d in events
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)


def synthetic_population(
    session: Session,
    *,
    leads: int = 1200,
    seed: int = 0,
    start: datetime = BASE_TIME,
    days: int = 360,
    connection: Connection | None = None,
) -> Connection:
    """A small funnel whose conversions depend on seniority and high-intent engagement.

    Leads are created evenly over ``days``; engaged leads visit pricing pages and book meetings,
    and convert more often (some activity also happens after conversion, as in a real CRM).
    Inserted with bulk inserts so a thousand leads take well under a second.
    """
    import numpy as np

    from store.models import Activity as ActivityRow
    from store.models import Lead as LeadRow

    rng = np.random.default_rng(seed)
    conn = connection or make_connection(session)
    titles = ["VP Engineering", "Marketing Manager", "Software Engineer", "Student", "CTO", "Sales Rep"]
    title_lift = {"VP Engineering": 1.0, "CTO": 1.2, "Marketing Manager": 0.3, "Software Engineer": 0.0,
                  "Student": -1.5, "Sales Rep": -0.3}
    lead_rows: list[dict[str, Any]] = []
    plans: list[tuple[int, float, datetime]] = []
    for i in range(leads):
        n = next(_seq)
        created = start + timedelta(days=days * i / leads, hours=float(rng.uniform(0, 12)))
        title = titles[int(rng.integers(len(titles)))]
        intent = float(rng.gamma(1.0, 1.0))
        logit = -3.2 + title_lift[title] + 1.1 * intent
        p = 1 / (1 + np.exp(-logit))
        converted_at = created + timedelta(days=float(rng.uniform(25, 80))) if rng.random() < p else None
        free = rng.random() < 0.2
        email = f"p{n}@gmail.com" if free else f"p{n}@co{n % 300}.com"
        company = f"Co {n % 300}"
        lead_rows.append(
            {
                "connection_id": conn.id, "crm_id": f"00Q{n:012d}", "email": email, "first_name": "Sam",
                "last_name": f"L{n}", "title": title, "company": company,
                "company_key": company_key(company, email), "industry": ["Software", "Retail", "N/A"][n % 3],
                "employees": int(rng.choice([20, 150, 800, 3000])), "annual_revenue": None,
                "country": ["USA", "Germany", "united states"][n % 3], "lead_source": "Web", "campaign": None,
                "status": "Converted" if converted_at else "Open", "owner_crm_id": "005X",
                "is_converted": converted_at is not None, "converted_at": converted_at,
                "crm_created_at": created, "crm_modified_at": created, "attributes": {}, "raw": {},
                "is_deleted": False,
            }
        )
        plans.append((len(lead_rows) - 1, intent, created))
    session.execute(insert(LeadRow), lead_rows)
    session.flush()
    ids: dict[str, int] = {
        crm_id: lead_id
        for crm_id, lead_id in session.execute(
            select(LeadRow.crm_id, LeadRow.id).where(LeadRow.connection_id == conn.id)
        ).all()
    }
    act_rows: list[dict[str, Any]] = []
    for index, intent, created in plans:
        row = lead_rows[index]
        lead_id = ids[row["crm_id"]]
        n_events = int(rng.poisson(2 + 4 * intent))
        for _ in range(n_events):
            at = created + timedelta(days=float(rng.uniform(0, 40)))
            kind = rng.choice(["web_visit", "web_visit", "email_open", "meeting", "email_send"],
                              p=[0.35, 0.15, 0.3, 0.05, 0.15])
            detail = "/pricing" if kind == "web_visit" and rng.random() < 0.2 + 0.15 * intent else "/blog"
            act_rows.append(
                {
                    "connection_id": conn.id, "crm_id": f"00T{next(_seq):012d}", "lead_crm_id": row["crm_id"],
                    "lead_id": lead_id, "type": str(kind), "occurred_at": at, "detail": detail,
                    "campaign": None, "crm_modified_at": at, "raw": {}, "is_deleted": False,
                }
            )
    if act_rows:
        session.execute(insert(ActivityRow), act_rows)
    session.flush()
    return conn


class RecordingSink:
    """A ``crmsim.model.FunnelSink`` that keeps the latest state of every person and every activity.

    Lets tests load a simulated funnel into the store directly, without the HTTP servers.
    """

    def __init__(self) -> None:
        self.people: dict[str, Any] = {}
        self.activities: list[Any] = []
        self.companies: dict[str, Any] = {}
        self.campaigns: dict[str, Any] = {}

    def put_owner(self, owner: Any) -> None:
        return None

    def put_queue(self, queue: Any) -> None:
        return None

    def put_campaign(self, campaign: Any) -> None:
        self.campaigns[campaign.key] = campaign

    def put_company(self, company: Any) -> None:
        self.companies[company.key] = dataclasses.replace(company)

    def put_person(self, person: Any) -> None:
        self.people[person.key] = dataclasses.replace(person, dq_faults=list(person.dq_faults))

    def put_activity(self, activity: Any) -> None:
        self.activities.append(dataclasses.replace(activity))

    def delete_person(self, person_key: str) -> None:
        if person_key in self.people:
            self.people[person_key] = dataclasses.replace(self.people[person_key], deleted=True)

    def crm_id(self, person_key: str) -> str | None:
        return person_key if person_key in self.people else None


def generate_world(**kwargs: Any) -> tuple[Any, RecordingSink]:
    """A generated ``crmsim.funnel.World(**kwargs)`` and the sink that recorded it."""
    from crmsim.funnel import World

    world = World(**kwargs)
    sink = RecordingSink()
    world.attach(sink)
    world.generate()
    return world, sink


def load_world(session: Session, sink: RecordingSink) -> dict[str, Connection]:
    """Put what a recorded funnel's CRMs show now (people, activities) straight into the store.

    One connection per CRM ("salesforce", "hubspot"); CRM ids are the world's person keys, so
    ``world.truth()`` rows join on ``crm_id``. Returns the connections by CRM name.
    """
    from store.models import Activity as ActivityRow
    from store.models import Lead as LeadRow

    conns = {crm: make_connection(session, name=f"{crm}-{next(_seq)}", kind=crm) for crm in ("salesforce", "hubspot")}
    campaigns = sink.campaigns
    rows: list[dict[str, Any]] = []
    for p in sink.people.values():
        company = sink.companies.get(p.company_key) if p.company_key else None
        company_name = p.company_name or (company.name if company else None)
        employees = p.employees if p.employees is not None else (company.employees if company else None)
        if employees is not None and not -(2**31) < int(employees) < 2**31:
            employees = None  # an absurd typo that does not even fit the CRM's integer column
        campaign = campaigns.get(p.campaign_key) if p.campaign_key else None
        rows.append(
            {
                "connection_id": conns[p.crm].id, "crm_id": p.key, "email": p.email, "first_name": p.first_name,
                "last_name": p.last_name, "title": p.title, "company": company_name,
                "company_key": company_key(company_name, p.email),
                "industry": p.industry if p.industry is not None else (company.industry if company else None),
                "employees": employees,
                "annual_revenue": p.annual_revenue if p.annual_revenue is not None
                else (company.annual_revenue if company else None),
                "country": p.country if p.country is not None else (company.country if company else None),
                "lead_source": p.lead_source, "campaign": campaign.name if campaign else p.campaign_key,
                "status": p.status, "owner_crm_id": p.owner_key,
                "is_converted": p.converted_at is not None, "converted_at": p.converted_at,
                "crm_created_at": p.created_at, "crm_modified_at": p.converted_at or p.created_at,
                "attributes": {}, "raw": {}, "is_deleted": bool(p.deleted),
                "lifecycle": "deleted" if p.deleted else "open",
            }
        )
    # A junk value longer than the column (a 400-character title) is cut as the CRM's own field
    # length would cut it; PostgreSQL refuses it whole where SQLite would keep it.
    limits = {c.name: c.type.length for c in LeadRow.__table__.columns if getattr(c.type, "length", None)}
    for row in rows:
        for name, limit in limits.items():
            if isinstance(row.get(name), str) and len(row[name]) > limit:
                row[name] = row[name][:limit]
    for start in range(0, len(rows), 2000):
        session.execute(insert(LeadRow), rows[start : start + 2000])
    session.flush()
    ids: dict[str, int] = {
        crm_id: lead_id
        for crm_id, lead_id in session.execute(
            select(LeadRow.crm_id, LeadRow.id).where(LeadRow.connection_id.in_([c.id for c in conns.values()]))
        ).all()
    }
    crm_of = {p.key: p.crm for p in sink.people.values()}
    act_rows = [
        {
            "connection_id": conns[crm_of[a.person_key]].id, "crm_id": a.key, "lead_crm_id": a.person_key,
            "lead_id": ids[a.person_key], "type": a.type, "occurred_at": a.occurred_at,
            "detail": str(a.detail)[:512] if a.detail else None, "campaign": a.campaign_key,
            "crm_modified_at": a.occurred_at, "raw": {}, "is_deleted": False,
        }
        for a in sink.activities
        if a.person_key in ids
    ]
    for start in range(0, len(act_rows), 5000):
        session.execute(insert(ActivityRow), act_rows[start : start + 5000])
    session.flush()
    return conns


# Small, fast CatBoost for tests: one grid point, few trees.
FAST_TRAINING: dict[str, Any] = {
    "families": ("catboost",),
    "catboost_iterations": 80,
    "training_options": {"catboost_grid": [{"depth": 4, "learning_rate": 0.15}]},
}


@functools.lru_cache(maxsize=2)
def synthetic_training(seed: int = 0, leads: int = 1500) -> tuple[Any, Any]:
    """(TrainingResult, TrainingSet) of a small CatBoost trained once per test process.

    Trained on :func:`synthetic_population` in a private in-memory SQLite database, so tests on
    any database can register it without paying for training each time.
    """
    from scoring.dataset import SPLIT_COLUMN, TARGET, build_training_set
    from scoring.training import train_and_compare
    from store.db import make_engine
    from store.models import Base

    engine = make_engine("sqlite:///:memory:")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        synthetic_population(session, leads=leads, seed=seed)
        tset = build_training_set(session, as_of=BASE_TIME + timedelta(days=500))
    engine.dispose()
    result = train_and_compare(
        tset.frame, target=TARGET, spec=tset.spec, time_col=SPLIT_COLUMN, seed=seed, min_per_class=50,
        families=FAST_TRAINING["families"], catboost_iterations=FAST_TRAINING["catboost_iterations"],
        drop_leaky=False, **FAST_TRAINING["training_options"],
    )
    return result, tset
