"""The simulated B2B funnel: companies, people, activity and conversions over simulated time.

A :class:`World` owns *what happens*. It draws a population with a hidden conversion
probability, turns every person's life (creation, activity, status changes, conversion,
merge or deletion) into timed events, and replays them in time order into the attached
:class:`~crmsim.model.FunnelSink` s (the API servers), setting the shared :class:`SimClock` to each
event's time first, so modification stamps spread over the history.

The hidden model (see ``docs/crmsim.md``):

* every company has a latent *account intent*; every person has a latent *intent*
  ``z = account intent + personal intent``; intent only drives activity (Poisson counts per
  event type, decaying after creation, high-intent pages, meetings, webinars, an evaluation
  burst for engaged leads, mostly within the first two weeks), never the outcome directly;
* *fit* mixes industry x size band (with interactions), seniority x department, country and lead
  source; with ``drift_day`` set, people created from that day on follow a different fit table, a
  different intent-to-behaviour mapping and different engagement weights, and arrive in a
  different mix (a new segment, webinar sourcing, more webinars: ``DRIFT_*``);
* the outcome is driven by what the CRM shows on day EARLY_WINDOW_DAYS: fit, the realised
  engagement of the first EARLY_WINDOW_DAYS (weighted by type, recent days double) ``E`` and the
  buying committee ``k``: ``logit = b0 + 0.6 fit + 3.8 s + 0.5 fit max(s, 0) + 0.5 tanh(k / 2)``
  with ``s = tanh(E / 3)``; ``b0`` is calibrated so the mean ``true_probability`` equals
  ``base_rate``. No hidden noise: the randomness left is the Bernoulli draw of the outcome and
  the conversion time (after the early window), with a generator of the person's own;
* after a conversion, onboarding activity follows.

``Person.true_probability`` is P(converted within 90 days of ``created_at``) given fit, early
engagement and committee. :meth:`World.true_probability_at` gives the same for any later snapshot
(conversion within a horizon after the snapshot, given no conversion before it). From
EARLY_WINDOW_DAYS on, everything it conditions on is in the CRM and later activity says nothing
more about the outcome, so it is the best any point-in-time model can do; before that it also
knows engagement still to come (an unreachable upper bound).

Everything is seeded and uses a fixed epoch: the same arguments give the same CRM, byte for byte.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import heapq
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from crmsim.model import (
    Activity,
    Campaign,
    Company,
    CRMName,
    FunnelSink,
    Owner,
    Person,
    Queue,
    SimClock,
)

if TYPE_CHECKING:
    from crmsim.csv_import import CsvPopulation

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
HORIZON_DAYS = 90
# Share of converters who convert within HORIZON_DAYS; the rest convert 90-150 days in.
WITHIN_HORIZON_SHARE = 0.93
DAY = 86_400
# Lead-creation rate at the end of the history relative to its start (mild growth).
GROWTH = 1.5
# Length of the evaluation burst (meetings, high-intent visits) of engaged leads.
RAMP_DAYS = 7
# No conversion happens earlier than this many days after creation.
MIN_CONVERSION_DAYS = 14
# The conversion chance is set by fit and by the engagement of a person's first
# EARLY_WINDOW_DAYS (the last RECENT_DAYS of it weigh double); conversions come after it.
EARLY_WINDOW_DAYS = 14
RECENT_DAYS = 7
# Colleagues who became leads this many days before a person make up the buying committee
# (the scoring feature looks back 90 days from a snapshot EARLY_WINDOW_DAYS after creation).
COMMITTEE_DAYS = 90 - EARLY_WINDOW_DAYS
CONVERSION_GAMMA = (2.0, 12.0)  # shape, scale (days) of conversion time after MIN_CONVERSION_DAYS
LATE_CONVERSION_DAYS = (HORIZON_DAYS + 1, 150)

# ---------------------------------------------------------------------------------------------
# Distributions that look like a B2B SaaS vendor's inbound funnel.

INDUSTRIES: tuple[tuple[str, float], ...] = (
    ("Software", 0.17), ("Financial Services", 0.11), ("Healthcare", 0.10), ("Manufacturing", 0.11),
    ("Retail", 0.09), ("Education", 0.07), ("Logistics", 0.06), ("Media", 0.05),
    ("Professional Services", 0.09), ("Telecommunications", 0.04), ("Energy", 0.04),
    ("Government", 0.04), ("Non-profit", 0.03),
)
SIZE_BANDS: tuple[tuple[str, int, int, float], ...] = (
    # band, min employees, max employees, share of companies
    ("1-10", 1, 10, 0.22), ("11-50", 11, 50, 0.27), ("51-200", 51, 200, 0.22),
    ("201-1000", 201, 1000, 0.16), ("1001-5000", 1001, 5000, 0.08), ("5000+", 5001, 120_000, 0.05),
)
COUNTRIES: tuple[tuple[str, float, str], ...] = (
    ("United States", 0.44, "+1"), ("United Kingdom", 0.10, "+44"), ("Germany", 0.08, "+49"),
    ("Canada", 0.06, "+1"), ("France", 0.05, "+33"), ("India", 0.06, "+91"),
    ("Australia", 0.04, "+61"), ("Netherlands", 0.03, "+31"), ("Brazil", 0.03, "+55"),
    ("Sweden", 0.02, "+46"), ("Spain", 0.02, "+34"), ("Japan", 0.02, "+81"),
    ("Singapore", 0.02, "+65"), ("Mexico", 0.03, "+52"),
)
REVENUE_PER_EMPLOYEE = {  # USD, rough medians
    "Software": 250_000, "Financial Services": 400_000, "Healthcare": 150_000,
    "Manufacturing": 200_000, "Retail": 180_000, "Education": 90_000, "Logistics": 170_000,
    "Media": 200_000, "Professional Services": 160_000, "Telecommunications": 350_000,
    "Energy": 600_000, "Government": 120_000, "Non-profit": 70_000,
}
SENIORITIES: tuple[tuple[str, float], ...] = (
    ("C-level", 0.06), ("VP", 0.08), ("Director", 0.15), ("Manager", 0.25), ("IC", 0.40),
    ("Student", 0.06),
)
DEPARTMENTS: tuple[tuple[str, float], ...] = (
    ("Engineering", 0.22), ("IT", 0.16), ("Operations", 0.14), ("Finance", 0.10),
    ("Marketing", 0.14), ("Sales", 0.12), ("HR", 0.06), ("Other", 0.06),
)
TITLES: dict[tuple[str, str], tuple[str, ...]] = {}
_C_LEVEL = {"Engineering": ("CTO",), "IT": ("CIO",), "Operations": ("COO",), "Finance": ("CFO",),
            "Marketing": ("CMO",), "Sales": ("Chief Revenue Officer",), "HR": ("Chief People Officer",),
            "Other": ("CEO", "Founder")}
_DEPT_WORD = {"Engineering": "Engineering", "IT": "IT", "Operations": "Operations", "Finance": "Finance",
              "Marketing": "Marketing", "Sales": "Sales", "HR": "People", "Other": "Strategy"}
_IC = {"Engineering": ("Software Engineer", "Data Engineer", "DevOps Engineer"),
       "IT": ("Systems Administrator", "IT Specialist"), "Operations": ("Operations Analyst",),
       "Finance": ("Financial Analyst", "Accountant"), "Marketing": ("Marketing Specialist",),
       "Sales": ("Account Executive", "Sales Representative"), "HR": ("HR Generalist", "Recruiter"),
       "Other": ("Consultant", "Analyst")}
for _dept, _ in DEPARTMENTS:
    _w = _DEPT_WORD[_dept]
    TITLES[("C-level", _dept)] = _C_LEVEL[_dept]
    TITLES[("VP", _dept)] = (f"VP of {_w}", f"VP {_w}")
    TITLES[("Director", _dept)] = (f"Director of {_w}", f"{_w} Director")
    TITLES[("Manager", _dept)] = (f"{_w} Manager", f"Senior {_w} Manager")
    TITLES[("IC", _dept)] = _IC[_dept]
    TITLES[("Student", _dept)] = ("Student", "Intern", f"{_w} Intern")

LEAD_SOURCES: tuple[tuple[str, float], ...] = (
    ("Web", 0.30), ("Paid Search", 0.18), ("Referral", 0.07), ("Trade Show", 0.08),
    ("Partner", 0.06), ("Outbound", 0.12), ("Webinar", 0.10), ("Content Syndication", 0.09),
)
SOURCE_CAMPAIGN_TYPE = {"Paid Search": "Paid Search", "Trade Show": "Trade Show", "Webinar": "Webinar",
                        "Content Syndication": "Content"}
INBOUND_SOURCES = {"Web", "Paid Search", "Webinar", "Content Syndication"}

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Priya", "Rahul",
    "Wei", "Mei", "Hiroshi", "Yuki", "Lukas", "Anna", "Sophie", "Emma", "Noah", "Liam", "Olivia", "Ava",
    "Lucas", "Mateo", "Camila", "Valentina", "Ahmed", "Fatima", "Chloé", "José", "Zoë", "Björn", "Søren",
    "François", "Ana", "Daniel", "Grace", "Ethan", "Isabella", "Arjun", "Ingrid", "Pedro", "Kenji",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson",
    "Martin", "Lee", "Patel", "Sharma", "Chen", "Wang", "Tanaka", "Sato", "Müller", "Schmidt",
    "Schneider", "Fischer", "Dubois", "Lefèvre", "Rossi", "Silva", "Santos", "Kim", "Park", "Nguyen",
    "Andersson", "Johansson", "O'Brien", "Murphy", "Kowalski", "Novák", "Ibrahim", "Khan", "Singh",
)
COMPANY_WORDS = (
    "Acme", "Apex", "Blue", "Bright", "Cedar", "Clear", "Core", "Crest", "Delta", "Echo", "Evergreen",
    "First", "Forge", "Granite", "Harbor", "Iron", "Keystone", "Lumen", "Maple", "Meridian", "Nexus",
    "North", "Nova", "Oak", "Orbit", "Pacific", "Peak", "Pioneer", "Prime", "Quantum", "Redwood",
    "Ridge", "River", "Sierra", "Silver", "Summit", "Swift", "Terra", "Titan", "Union", "Vector",
    "Vertex", "Vista", "Wave", "West", "Zenith", "Atlas", "Beacon", "Cobalt", "Falcon",
)
COMPANY_NOUNS = {
    "Software": ("Labs", "Software", "Systems", "Cloud", "Data"),
    "Financial Services": ("Capital", "Bank", "Financial"),
    "Healthcare": ("Health", "Medical", "Care"), "Manufacturing": ("Industries", "Manufacturing", "Works"),
    "Retail": ("Retail", "Stores", "Goods"), "Education": ("Academy", "Learning", "University"),
    "Logistics": ("Logistics", "Freight", "Shipping"), "Media": ("Media", "Studios", "Publishing"),
    "Professional Services": ("Consulting", "Partners", "Advisors"),
    "Telecommunications": ("Telecom", "Networks"),
    "Energy": ("Energy", "Power", "Resources"), "Government": ("County", "Agency", "Authority"),
    "Non-profit": ("Foundation", "Trust", "Alliance"),
}
COMPANY_SUFFIX = {"United States": ("Inc.", "LLC", "Corp."), "United Kingdom": ("Ltd", "plc"),
                  "Germany": ("GmbH", "AG"), "France": ("SA", "SAS"), "Netherlands": ("B.V.",),
                  "Sweden": ("AB",), "Spain": ("S.L.",), "Brazil": ("Ltda.",), "Japan": ("K.K.",)}

OWNERS = (
    ("U001", "Maya Alvarez"), ("U002", "Tom Becker"), ("U003", "Aisha Rahman"), ("U004", "Ben Carter"),
    ("U005", "Lena Vogel"), ("U006", "Marcus Reed"), ("U007", "Sofia Rossi"), ("U008", "Ken Watanabe"),
)
SDR_OWNERS = ("U001", "U002", "U003", "U004", "U005")
AE_OWNERS = ("U006", "U007", "U008")
QUEUES = (("Q01", "SDR Queue"), ("Q02", "Nurture Queue"), ("Q03", "Enterprise Queue"))
CAMPAIGNS: tuple[tuple[str, str, str], ...] = (
    ("K001", "Webinar: Scaling Data Pipelines", "Webinar"),
    ("K002", "Webinar: Security for Regulated Industries", "Webinar"),
    ("K003", "Webinar: Customer Story Live", "Webinar"),
    ("K004", "Webinar: Product Launch Deep Dive", "Webinar"),
    ("K005", "Monthly Newsletter", "Email"),
    ("K006", "Nurture Track: Evaluators", "Email"),
    ("K007", "Nurture Track: Executives", "Email"),
    ("K008", "Product Updates", "Email"),
    ("K009", "Search: Brand", "Paid Search"),
    ("K010", "Search: Competitor Keywords", "Paid Search"),
    ("K011", "Search: Category Keywords", "Paid Search"),
    ("K012", "SaaStr Annual", "Trade Show"),
    ("K013", "AWS re:Invent", "Trade Show"),
    ("K014", "Gartner Symposium", "Trade Show"),
    ("K015", "Content: ROI Guide", "Content"),
    ("K016", "Content: State of Data Report", "Content"),
    ("K017", "Content: Buyer's Checklist", "Content"),
    ("K018", "Webinar: Ask the Experts", "Webinar"),
)
CAMPAIGNS_BY_TYPE: dict[str, tuple[str, ...]] = {}
for _key, _name, _ctype in CAMPAIGNS:
    CAMPAIGNS_BY_TYPE[_ctype] = (*CAMPAIGNS_BY_TYPE.get(_ctype, ()), _key)

HIGH_INTENT_PAGES = ("/pricing", "/demo", "/contact-sales")
ORDINARY_PAGES = (
    "/", "/product", "/product/integrations", "/customers", "/docs/api", "/docs/getting-started",
    "/blog/data-quality-checklist", "/blog/why-lead-scoring", "/blog/crm-hygiene", "/careers",
    "/about", "/security",
)
CONTENT_TITLES = ("ROI guide", "State of Data Report 2025", "Buyer's checklist", "Security whitepaper",
                  "Implementation playbook", "Analyst report")
EMAIL_SUBJECTS = ("Your monthly product digest", "3 ways teams cut reporting time",
                  "Invitation: live product tour", "New: integrations you asked for",
                  "Case study: how Meridian scaled", "Last chance: webinar seats")
ONBOARDING_SUBJECTS = ("Welcome aboard: your onboarding plan", "Your workspace is ready",
                       "Onboarding checklist: week 1")
MEETING_SUBJECTS = ("Discovery call", "Product demo", "Technical deep dive", "Pricing review")
JUNK_VALUES = ("N/A", "-1", "Select", "none", "unknown", ".")

# ---------------------------------------------------------------------------------------------
# The hidden fit model, before and after drift.


@dataclass(frozen=True)
class Regime:
    """Drivers of conversion in one period. ``page_intent_slope`` couples high-intent page visits
    to intent; ``webinar_intent_slope`` couples webinar attendance to intent;
    ``engagement_weights`` value each kind of early engagement (``"high_intent"``: a visit of a
    high-intent page, on top of the visit itself) in the conversion logit."""

    industry: dict[str, float]
    size: dict[str, float]
    industry_size: dict[tuple[str, str], float]
    seniority: dict[str, float]
    department: dict[str, float]
    seniority_department: dict[tuple[str, str], float]
    country: dict[str, float]
    source: dict[str, float]
    page_intent_slope: float
    webinar_intent_slope: float
    engagement_weights: dict[str, float]


_SENIOR_TECH = {(s, d): 0.35 for s in ("VP", "Director") for d in ("IT", "Engineering")}
BEFORE_DRIFT = Regime(
    industry={"Software": 0.6, "Financial Services": 0.4, "Healthcare": 0.1, "Manufacturing": 0.0,
              "Retail": -0.25, "Education": -0.5, "Logistics": 0.1, "Media": -0.2,
              "Professional Services": 0.2, "Telecommunications": 0.1, "Energy": 0.0,
              "Government": -0.6, "Non-profit": -0.7},
    size={"1-10": -0.8, "11-50": -0.2, "51-200": 0.3, "201-1000": 0.5, "1001-5000": 0.3, "5000+": 0.0},
    industry_size={("Software", "51-200"): 0.3, ("Software", "201-1000"): 0.3,
                   ("Financial Services", "1001-5000"): 0.4, ("Financial Services", "5000+"): 0.4,
                   ("Retail", "1-10"): -0.3, ("Retail", "11-50"): -0.3},
    seniority={"C-level": 0.2, "VP": 0.5, "Director": 0.6, "Manager": 0.3, "IC": -0.2, "Student": -1.6},
    department={"Engineering": 0.3, "IT": 0.4, "Operations": 0.2, "Finance": 0.1, "Marketing": 0.0,
                "Sales": -0.1, "HR": -0.3, "Other": -0.3},
    seniority_department=_SENIOR_TECH,
    country={"United States": 0.15, "India": -0.3, "Brazil": -0.2, "Mexico": -0.2, "Japan": -0.1},
    source={"Web": 0.1, "Paid Search": -0.1, "Referral": 0.7, "Trade Show": 0.2, "Partner": 0.4,
            "Outbound": -0.5, "Webinar": 0.2, "Content Syndication": -0.4},
    page_intent_slope=1.0,
    webinar_intent_slope=0.6,
    engagement_weights={"email_open": 0.12, "email_click": 0.3, "web_visit": 0.2, "form_submit": 0.45,
                        "content_download": 0.3, "webinar": 0.3, "meeting": 1.0, "campaign_response": 0.3,
                        "high_intent": 0.8},
)
# After the drift the market moved: healthcare and mid-market retail became the good fit,
# software saturated, small companies buy self-serve, and pricing-page visits stopped meaning
# intent while webinar attendance started to.
AFTER_DRIFT = Regime(
    industry={"Software": -0.3, "Financial Services": 0.1, "Healthcare": 0.8, "Manufacturing": 0.3,
              "Retail": 0.5, "Education": -0.2, "Logistics": 0.2, "Media": -0.4,
              "Professional Services": 0.0, "Telecommunications": -0.1, "Energy": 0.2,
              "Government": -0.3, "Non-profit": -0.5},
    size={"1-10": 0.2, "11-50": 0.4, "51-200": 0.3, "201-1000": -0.1, "1001-5000": -0.3, "5000+": -0.5},
    industry_size={("Healthcare", "201-1000"): 0.4, ("Retail", "51-200"): 0.4},
    seniority={"C-level": 0.5, "VP": 0.3, "Director": 0.2, "Manager": 0.2, "IC": 0.0, "Student": -1.6},
    department={"Engineering": -0.1, "IT": 0.0, "Operations": 0.5, "Finance": 0.4, "Marketing": 0.1,
                "Sales": 0.0, "HR": -0.2, "Other": -0.2},
    seniority_department={("C-level", "Operations"): 0.4, ("C-level", "Finance"): 0.4},
    country={"United States": 0.0, "Germany": 0.3, "United Kingdom": 0.2, "India": 0.0},
    source={"Web": 0.0, "Paid Search": 0.1, "Referral": 0.5, "Trade Show": -0.2, "Partner": 0.2,
            "Outbound": -0.3, "Webinar": 0.6, "Content Syndication": -0.2},
    page_intent_slope=0.0,
    webinar_intent_slope=1.5,
    engagement_weights={"email_open": 0.12, "email_click": 0.3, "web_visit": 0.2, "form_submit": 0.45,
                        "content_download": 0.3, "webinar": 1.2, "meeting": 1.0, "campaign_response": 0.3,
                        "high_intent": 0.0},
)
REGIMES = (BEFORE_DRIFT, AFTER_DRIFT)
# The drift is a market shift the CRM shows, not only a change of hidden drivers: from the drift
# day on, a new segment (healthcare and retail companies of 1-50 people) brings a large share
# of the new leads, webinars become a lead source of their own, and leads attend webinars more.
DRIFT_SEGMENT_INDUSTRIES = ("Healthcare", "Retail")
DRIFT_SEGMENT_BANDS = ("1-10", "11-50")
DRIFT_SEGMENT_SHARE = 0.6  # of post-drift leads, drawn from the segment's companies
DRIFT_WEBINAR_SOURCE_SHARE = 0.6  # of post-drift leads, re-sourced to "Webinar"
DRIFT_WEBINAR_RATE = 2.0  # multiplies the webinar attendance rate of post-drift leads


def size_band(employees: int) -> str:
    """The size band ("1-10" ... "5000+") of a head count."""
    for band, _low, high, _share in SIZE_BANDS:
        if employees <= high:
            return band
    return SIZE_BANDS[-1][0]


def regime_fit(regime: Regime, *, industry: str, band: str, seniority: str, department: str,
               country: str, source: str) -> float:
    """The fit part of the hidden logit for one person under one regime."""
    return (regime.industry.get(industry, 0.0) + regime.size.get(band, 0.0)
            + regime.industry_size.get((industry, band), 0.0)
            + regime.seniority.get(seniority, 0.0) + regime.department.get(department, 0.0)
            + regime.seniority_department.get((seniority, department), 0.0)
            + regime.country.get(country, 0.0) + regime.source.get(source, 0.0))


def behaviour_logit(engagement: float, committee: int, fit: float) -> float:
    """The behaviour part of the hidden logit: saturating in the weighted early engagement,
    stronger for good-fit people, plus a saturating buying-committee term."""
    saturated = math.tanh(engagement / ENGAGEMENT_SATURATION)
    return (BEHAVIOUR_SCALE * saturated + INTERACTION * fit * max(saturated, 0.0)
            + COMMITTEE_SCALE * math.tanh(committee / 2.0))


FIT_SCALE = 0.6
BEHAVIOUR_SCALE = 3.8
ENGAGEMENT_SATURATION = 3.0
INTERACTION = 0.5
COMMITTEE_SCALE = 0.5


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _pick(rng: random.Random, table: tuple[tuple[Any, ...], ...], cum: list[float]) -> tuple[Any, ...]:
    return table[bisect.bisect_left(cum, rng.random() * cum[-1])]


def _cumulative(table: tuple[tuple[Any, ...], ...], weight_at: int) -> list[float]:
    out, total = [], 0.0
    for row in table:
        total += float(row[weight_at])
        out.append(total)
    return out


_IND_CUM = _cumulative(INDUSTRIES, 1)
_SIZE_CUM = _cumulative(SIZE_BANDS, 3)
_COUNTRY_CUM = _cumulative(COUNTRIES, 1)
_SEN_CUM = _cumulative(SENIORITIES, 1)
_DEPT_CUM = _cumulative(DEPARTMENTS, 1)
_SOURCE_CUM = _cumulative(LEAD_SOURCES, 1)
_PHONE_PREFIX = {name: prefix for name, _w, prefix in COUNTRIES}


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method for small rates, normal approximation for large ones (deterministic)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


# ---------------------------------------------------------------------------------------------


@dataclass
class _Hidden:
    """What the world knows about a person and the CRM does not."""

    index: int
    intent: float
    fit: tuple[float, float]  # under each regime
    regime: int
    seniority: str
    department: str
    band: str
    rng: random.Random
    probability_known: bool = True
    label: str = ""  # seeds the outcome draw: f"{label}/outcome"
    company: int = -1  # index into the world's company list
    # Weighted early engagement (first EARLY_WINDOW_DAYS) under each regime's weights, and the
    # colleagues who became leads in the COMMITTEE_DAYS before this person: set by _draw_activity.
    engagement: tuple[float, float] = (0.0, 0.0)
    committee: int = 0
    spam: bool = False
    first_touch: int = 0


# Event kinds, in the order used to break ties at the same instant.
_CREATE, _ACTIVITY, _STATUS, _CONVERT, _MERGE, _DELETE = range(6)


@dataclass
class AdvanceSummary:
    """What one :meth:`World.advance` (or :meth:`World.generate`) emitted."""

    days: float
    now: str
    new_leads: int = 0
    new_activities: int = 0
    conversions: int = 0
    status_changes: int = 0
    deletions: int = 0
    merges: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class World:
    """A seeded, simulated B2B funnel feeding one or two CRM sinks.

    Build it, :meth:`attach` sinks, call :meth:`generate` once (history up to
    ``epoch + history_days``), then :meth:`advance` as often as wanted. ``truth()`` exports the
    hidden ground truth of every person created so far.
    """

    def __init__(self, seed: int = 0, leads: int = 12000, history_days: int = 540, base_rate: float = 0.10,
                 dq_rate: float = 0.03, drift_day: int | None = None, crm_split: float = 0.5,
                 activity_scale: float = 1.0) -> None:
        if leads < 1:
            raise ValueError("leads must be at least 1")
        if history_days < 1:
            raise ValueError("history_days must be at least 1")
        if not 0.0 < base_rate < 0.5:
            raise ValueError("base_rate must be in (0, 0.5)")
        if not 0.0 <= dq_rate <= 0.5:
            raise ValueError("dq_rate must be in [0, 0.5]")
        if not 0.0 <= crm_split <= 1.0:
            raise ValueError("crm_split must be in [0, 1]")
        self.seed = seed
        self.leads = leads
        self.history_days = history_days
        self.base_rate = base_rate
        self.dq_rate = dq_rate
        self.drift_day = drift_day
        self.crm_split = crm_split
        self.activity_scale = activity_scale
        self.epoch = EPOCH
        self.clock = SimClock(EPOCH)
        self.owners = [Owner(key, name, name.lower().replace(" ", ".") + "@vendor.example")
                       for key, name in OWNERS]
        self.queues = [Queue(key, name) for key, name in QUEUES]
        self.campaigns = [Campaign(key, name, ctype) for key, name, ctype in CAMPAIGNS]
        self.companies: dict[str, Company] = {}
        self.people: dict[str, Person] = {}  # emitted people by key
        self._index_by_key: dict[str, int] = {}
        self._sinks: list[tuple[FunnelSink, CRMName | None]] = []
        self._heap: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self._now_s = 0
        self._generated = False
        self._pending: list[Person] = []  # people by internal index (key assigned at creation)
        self._hidden: list[_Hidden] = []
        self._company_account_intent: list[float] = []
        self._company_band: list[str] = []
        self._company_cum: list[float] = []
        self._company_created: list[list[int]] = []  # creation seconds of each company's people
        self._company_list: list[Company] = []
        self._emitted_companies: set[str] = set()
        self._person_counter = 0
        self._activity_counter = 0
        self._next_day = history_days  # first day whose new leads advance() must still draw
        self._b0 = (0.0, 0.0)
        self._from_csv = False
        self._segment: tuple[list[int], list[float]] | None = None  # see _drift_segment
        self._summary = AdvanceSummary(days=0.0, now="")
        self.activity_count = 0
        if leads:
            self._build_companies(max(20, leads // 4))

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str, mapping: dict[str, str] | None = None, *, target_col: str | None = None,
                 seed: int = 0, history_days: int = 540, crm_split: float = 0.5) -> World:
        """A world whose people come from a real data set (see :mod:`crmsim.csv_import`).

        Its people have no known ``true_probability`` (``truth()`` reports None); their outcome
        comes from ``target_col``. ``advance`` only replays the already-known future (conversions
        and activity after the current clock); it draws no new leads.
        """
        from crmsim.csv_import import X_EDUCATION_MAPPING, X_EDUCATION_TARGET, load_people_from_csv

        world = cls(seed=seed, leads=1, history_days=history_days, dq_rate=0.0, crm_split=crm_split)
        world._from_csv = True
        world.companies = {}
        world._company_list = []
        population = load_people_from_csv(
            path, mapping or X_EDUCATION_MAPPING,
            target_col=target_col if target_col is not None or mapping else X_EDUCATION_TARGET,
            seed=seed, history_days=history_days, crm_split=crm_split)
        world._load_population(population)
        return world

    def attach(self, sink: FunnelSink, crm: CRMName | None = None) -> None:
        """Feed ``sink``: only people of ``crm`` (None: every person); owners, queues, campaigns
        and companies go to every sink. Attach before :meth:`generate`."""
        if self._generated:
            raise RuntimeError("attach sinks before generate()")
        self._sinks.append((sink, crm))

    def _build_companies(self, count: int) -> None:
        rng = random.Random(f"crmsim/{self.seed}/companies")
        used_domains: set[str] = set()
        weights: list[float] = []
        for i in range(count):
            industry = _pick(rng, INDUSTRIES, _IND_CUM)[0]
            band, low, high, _share = _pick(rng, SIZE_BANDS, _SIZE_CUM)
            employees = int(round(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))
            employees = min(max(employees, low), high)
            country, _w, _prefix = _pick(rng, COUNTRIES, _COUNTRY_CUM)
            revenue = employees * REVENUE_PER_EMPLOYEE[industry] * math.exp(rng.gauss(0.0, 0.5))
            word = rng.choice(COMPANY_WORDS)
            noun = rng.choice(COMPANY_NOUNS[industry])
            base = f"{word} {noun}"
            domain = f"{word}-{noun}".lower() + ".com"
            if domain in used_domains:
                second = rng.choice(COMPANY_WORDS)
                base = f"{word} {second} {noun}"
                domain = f"{word}{second}-{noun}".lower() + ".com"
                if domain in used_domains:
                    domain = f"{word}-{noun}-{i}".lower() + ".com"
            used_domains.add(domain)
            suffixes = COMPANY_SUFFIX.get(country)
            name = f"{base} {rng.choice(suffixes)}" if suffixes and rng.random() < 0.6 else base
            company = Company(key=f"C{i + 1:06d}", name=name, domain=domain, industry=industry,
                              employees=employees, annual_revenue=round(revenue, -3), country=country)
            account_intent = rng.gauss(0.0, 0.6)
            # Bigger companies and companies in-market send more people: buying committees.
            size_weight = {"1-10": 0.5, "11-50": 0.8, "51-200": 1.0, "201-1000": 1.4, "1001-5000": 1.8,
                           "5000+": 2.2}[band]
            weights.append(size_weight * math.exp(0.9 * account_intent) * rng.paretovariate(2.5))
            self._company_list.append(company)
            self._company_account_intent.append(account_intent)
            self._company_band.append(band)
            self._company_created.append([])
            self.companies[company.key] = company
        total = 0.0
        for w in weights:
            total += w
            self._company_cum.append(total)

    # --- people ---------------------------------------------------------------------------------

    def _draw_person(self, index: int, created_s: int, label: str) -> None:
        """Phase one: attributes and latent state (no outcome yet: b0 may still be calibrated).

        ``label`` seeds this person's generators; people must be drawn in creation order.
        """
        rng = random.Random(label)
        regime = 1 if self.drift_day is not None and created_s >= self.drift_day * DAY else 0
        ci = bisect.bisect_left(self._company_cum, rng.random() * self._company_cum[-1])
        if regime == 1:
            # Extra draws only after the drift: earlier people stay byte-identical.
            segment, segment_cum = self._drift_segment()
            if segment and rng.random() < DRIFT_SEGMENT_SHARE:
                ci = segment[bisect.bisect_left(segment_cum, rng.random() * segment_cum[-1])]
        self._company_created[ci].append(created_s)
        company = self._company_list[ci]
        band = self._company_band[ci]
        seniority = _pick(rng, SENIORITIES, _SEN_CUM)[0]
        department = _pick(rng, DEPARTMENTS, _DEPT_CUM)[0]
        source = _pick(rng, LEAD_SOURCES, _SOURCE_CUM)[0]
        # Senior people more often arrive by referral or trade show; students by content.
        if seniority in ("C-level", "VP") and rng.random() < 0.15:
            source = rng.choice(("Referral", "Trade Show", "Partner"))
        elif seniority == "Student" and rng.random() < 0.4:
            source = "Content Syndication"
        if regime == 1 and rng.random() < DRIFT_WEBINAR_SOURCE_SHARE:
            source = "Webinar"
        ctype = SOURCE_CAMPAIGN_TYPE.get(source)
        campaign_key: str | None = None
        if ctype:
            campaign_key = rng.choice(CAMPAIGNS_BY_TYPE[ctype])
        elif source == "Web" and rng.random() < 0.3:
            campaign_key = rng.choice(CAMPAIGNS_BY_TYPE["Email"])
        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace("'", "")
        email = f"{local}{rng.randint(1, 99) if rng.random() < 0.2 else ''}@{company.domain}"
        prefix = _PHONE_PREFIX.get(company.country or "", "+1")
        phone = f"{prefix} {rng.randint(200, 989)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
        crm: CRMName = "salesforce" if rng.random() < self.crm_split else "hubspot"
        employees = company.employees or 0
        owner = rng.choice(AE_OWNERS) if employees > 1000 else rng.choice(SDR_OWNERS)
        person = Person(
            key="", crm=crm, company_key=company.key, first_name=first, last_name=last, email=email,
            title=rng.choice(TITLES[(seniority, department)]), phone=phone, lead_source=source,
            campaign_key=campaign_key, status="Open", owner_key=owner,
            created_at=EPOCH + timedelta(seconds=created_s), company_name=company.name,
            industry=company.industry, employees=company.employees, annual_revenue=company.annual_revenue,
            country=company.country)
        intent = self._company_account_intent[ci] + rng.gauss(0.0, 0.9)
        fits = tuple(regime_fit(r, industry=company.industry or "", band=band, seniority=seniority,
                                department=department, country=company.country or "", source=source)
                     for r in REGIMES)
        hidden = _Hidden(index=index, intent=intent, fit=(fits[0], fits[1]), regime=regime, seniority=seniority,
                         department=department, band=band, rng=rng, label=label, company=ci)
        if rng.random() < self.dq_rate:
            self._inject_dq(person, rng)
        self._pending.append(person)
        self._hidden.append(hidden)

    def _drift_segment(self) -> tuple[list[int], list[float]]:
        """The companies of the post-drift segment (indexes) and their cumulative draw weights."""
        if self._segment is None:
            indexes: list[int] = []
            cum: list[float] = []
            total = 0.0
            for i, company in enumerate(self._company_list):
                if company.industry in DRIFT_SEGMENT_INDUSTRIES and self._company_band[i] in DRIFT_SEGMENT_BANDS:
                    total += self._company_cum[i] - (self._company_cum[i - 1] if i else 0.0)
                    indexes.append(i)
                    cum.append(total)
            self._segment = (indexes, cum)
        return self._segment

    def _logit_without_b0(self, hidden: _Hidden, regime: int) -> float:
        fit = hidden.fit[regime]
        return FIT_SCALE * fit + behaviour_logit(hidden.engagement[regime], hidden.committee, fit)

    def _calibrate(self) -> None:
        """Pick b0 per regime so the mean true probability over the history equals base_rate.

        Every history person counts under both regimes (their realised engagement valued with
        each regime's weights), so a regime nobody is in yet is calibrated too.
        """
        b0 = []
        originals = self._hidden[: self.leads]  # duplicates come later and repeat a person
        for regime in (0, 1):
            logits = np.array([self._logit_without_b0(h, regime) for h in originals])
            low, high = -15.0, 10.0
            for _ in range(60):
                mid = (low + high) / 2
                mean = float(np.mean(1.0 / (1.0 + np.exp(-(mid + logits))))) * WITHIN_HORIZON_SHARE
                if mean < self.base_rate:
                    low = mid
                else:
                    high = mid
            b0.append((low + high) / 2)
        self._b0 = (b0[0], b0[1])

    def _inject_dq(self, person: Person, rng: random.Random) -> None:
        kind = rng.choice(("missing", "junk", "casing", "absurd", "long", "non_ascii"))
        if kind == "missing":
            field_name = rng.choice(("title", "industry", "country", "phone", "company_name", "lead_source"))
            setattr(person, field_name, None)
        elif kind == "junk":
            field_name = rng.choice(("title", "industry", "country", "lead_source", "phone"))
            setattr(person, field_name, rng.choice(JUNK_VALUES))
        elif kind == "casing":
            field_name = rng.choice(("company_name", "email", "industry", "title"))
            value = getattr(person, field_name)
            if value is not None:
                setattr(person, field_name, value.upper() if rng.random() < 0.5 else value.lower())
        elif kind == "absurd":
            if rng.random() < 0.5:
                field_name = "employees"
                person.employees = 10**9
            else:
                field_name = "annual_revenue"
                person.annual_revenue = -abs(person.annual_revenue or 1_000_000.0)
        elif kind == "long":
            field_name = rng.choice(("title", "company_name"))
            value = getattr(person, field_name) or "Lead"
            setattr(person, field_name, (value + " / ") * (320 // (len(value) + 3) + 1))
        else:
            field_name = rng.choice(("first_name", "last_name", "company_name", "title"))
            value = getattr(person, field_name) or "x"
            setattr(person, field_name, value + rng.choice((" 🚀", " – Ünïcödé", " 株式会社", " Ωmega")))
        person.dq_faults.append(f"{kind}:{field_name}")

    # --- scheduling -----------------------------------------------------------------------------

    def _push(self, t_s: int, kind: int, index: int, data: Any = None) -> None:
        self._seq += 1
        # Ties at one instant break by kind, then person, then push order within that person:
        # independent of how advance() was chunked.
        heapq.heappush(self._heap, (t_s, kind, index, self._seq, data))

    def _schedule(self, hidden: _Hidden) -> None:
        """Phases two and three of one person (b0 already calibrated)."""
        self._draw_activity(hidden)
        self._decide(hidden)

    def _draw_activity(self, hidden: _Hidden) -> None:
        """Phase two: every event of the person's life that does not depend on the outcome.

        Intent drives the activity; the engagement of the first EARLY_WINDOW_DAYS is tallied into
        ``hidden.engagement`` (one value per regime's weights) and the buying committee into
        ``hidden.committee``: with fit, these alone set the conversion chance (phase three).
        """
        person = self._pending[hidden.index]
        rng = hidden.rng
        regime = REGIMES[hidden.regime]
        scale = self.activity_scale
        c = int(person.created_at.timestamp() - EPOCH.timestamp())
        z = hidden.intent
        self._push(c, _CREATE, hidden.index)
        end_s: int | None = None  # deleted at
        if rng.random() < 0.01:
            # Spam cleanup, always after the early window; a deleted spam lead never converts.
            hidden.spam = True
            end_s = c + int(rng.uniform(20, 200) * DAY)
            self._push(end_s, _DELETE, hidden.index)
        early_end = c + EARLY_WINDOW_DAYS * DAY
        recent_start = early_end - RECENT_DAYS * DAY
        weights = (REGIMES[0].engagement_weights, REGIMES[1].engagement_weights)
        engagement = [0.0, 0.0]

        def act(t_s: float, kind: str, detail: str | None = None, campaign: str | None = None) -> None:
            t = int(t_s)
            if end_s is not None and t >= end_s:
                return
            self._push(t, _ACTIVITY, hidden.index, (kind, detail, campaign))
            if t < early_end:
                recency = 1.0 if t > recent_start else 0.5
                high = kind == "web_visit" and detail in HIGH_INTENT_PAGES
                for r in (0, 1):
                    w = weights[r].get(kind, 0.0) + (weights[r]["high_intent"] if high else 0.0)
                    engagement[r] += recency * w

        def decayed(mean_days: float) -> float:
            return c + rng.expovariate(1.0 / mean_days) * DAY

        # The event that created the lead.
        if person.lead_source in INBOUND_SOURCES:
            act(c, "form_submit", rng.choice(("/demo", "/contact-sales", "/ebook", "/trial"))
                if z > 1.0 else rng.choice(("/ebook", "/newsletter", "/webinar-signup")), person.campaign_key)
        # Marketing email: blasts go out Tuesdays and Thursdays 14:00 UTC, many leads share a stamp.
        for _ in range(_poisson(rng, 2.6 * scale)):
            t = _next_blast(decayed(60.0))
            subject = rng.choice(EMAIL_SUBJECTS)
            act(t, "email_send", subject, rng.choice(CAMPAIGNS_BY_TYPE["Email"]))
            if rng.random() < _sigmoid(-0.6 + 0.9 * z):
                t_open = t + rng.expovariate(1 / 8.0) * 3600
                act(t_open, "email_open", subject)
                if rng.random() < _sigmoid(-1.2 + 0.8 * z):
                    act(t_open + rng.uniform(5, 600), "email_click", subject)
        # Web visits; high-intent pages mean intent only before the drift.
        high_p = _sigmoid(-2.2 + regime.page_intent_slope * z) if regime.page_intent_slope else 0.15
        for _ in range(_poisson(rng, 2.0 * scale * math.exp(0.9 * z - 0.5))):
            page = rng.choice(HIGH_INTENT_PAGES) if rng.random() < high_p else rng.choice(ORDINARY_PAGES)
            act(decayed(30.0), "web_visit", page)
        for _ in range(_poisson(rng, 0.4 * scale * math.exp(0.6 * z - 0.25))):
            act(decayed(30.0), "form_submit", rng.choice(("/ebook", "/newsletter", "/contact-sales")))
        for _ in range(_poisson(rng, 0.6 * scale * math.exp(0.6 * z - 0.25))):
            act(decayed(40.0), "content_download", rng.choice(CONTENT_TITLES))
        slope = regime.webinar_intent_slope
        webinar_rate = 0.25 * (DRIFT_WEBINAR_RATE if hidden.regime == 1 else 1.0)
        for _ in range(_poisson(rng, webinar_rate * scale * math.exp(slope * z - slope * slope / 2))):
            act(decayed(45.0), "webinar", None, rng.choice(CAMPAIGNS_BY_TYPE["Webinar"]))
        for _ in range(_poisson(rng, 0.15 * scale * math.exp(1.2 * z - 0.7))):
            act(decayed(25.0), "meeting", rng.choice(MEETING_SUBJECTS))
        # SDR outreach: the first call or email decides when the lead becomes "Working".
        first_touch = c + rng.uniform(0.1, 4.0) * DAY
        act(first_touch, "call", "Intro call")
        for _ in range(_poisson(rng, 0.8 * scale)):
            act(first_touch + rng.expovariate(1 / 12.0) * DAY, "call", "Follow-up call")
        if person.campaign_key:
            for _ in range(_poisson(rng, 0.3 * scale * math.exp(0.5 * z - 0.12))):
                act(decayed(30.0), "campaign_response", None, person.campaign_key)
        self._push(int(first_touch) + 60, _STATUS, hidden.index, "Working")
        hidden.first_touch = int(first_touch)

        # The evaluation burst: meetings plus high-intent visits (webinars after the drift) over
        # about a week, mostly within the early window. Its chance rises with intent.
        if rng.random() < _sigmoid(1.6 * z - 1.2):
            burst_s = c + rng.gammavariate(2.0, 4.0) * DAY
            for _ in range(1 + _poisson(rng, 1.0 * scale)):
                act(burst_s + rng.uniform(0, RAMP_DAYS) * DAY, "meeting", rng.choice(MEETING_SUBJECTS))
            if hidden.regime == 0:
                for _ in range(1 + _poisson(rng, 1.0 * scale)):
                    act(burst_s + rng.uniform(0, RAMP_DAYS) * DAY, "web_visit", rng.choice(HIGH_INTENT_PAGES))
            else:
                act(burst_s + rng.uniform(0, RAMP_DAYS) * DAY, "webinar", None,
                    rng.choice(CAMPAIGNS_BY_TYPE["Webinar"]))
        hidden.engagement = (engagement[0], engagement[1])
        created = self._company_created[hidden.company]
        hidden.committee = bisect.bisect_left(created, c) - bisect.bisect_left(created, c - COMMITTEE_DAYS * DAY)
        hidden.rng = _SPENT  # release the generator's state memory

    def _decide(self, hidden: _Hidden) -> None:
        """Phase three: the outcome, drawn from fit and the realised early engagement with a
        generator of its own, and the events that follow from it."""
        person = self._pending[hidden.index]
        rng = random.Random(f"{hidden.label}/outcome")
        scale = self.activity_scale
        c = int(person.created_at.timestamp() - EPOCH.timestamp())
        p_ever = _sigmoid(self._b0[hidden.regime] + self._logit_without_b0(hidden, hidden.regime))
        person.true_probability = p_ever * WITHIN_HORIZON_SHARE
        # All the randomness left is here: who converts among equals, and when.
        will_convert = rng.random() < p_ever and not hidden.spam
        person.will_convert = will_convert
        first_touch = hidden.first_touch
        if will_convert:
            if rng.random() < WITHIN_HORIZON_SHARE:
                days = min(MIN_CONVERSION_DAYS + rng.gammavariate(*CONVERSION_GAMMA), HORIZON_DAYS - 0.01)
            else:
                days = rng.uniform(*LATE_CONVERSION_DAYS)
            conv_s = c + int(days * DAY)
            # Sales qualifies the lead shortly before the conversion, then onboarding follows it.
            qualified = conv_s - int(rng.uniform(1, RAMP_DAYS) * DAY)
            if qualified - c > 45 * DAY:
                nurture_s = _batch_time(c + int(rng.uniform(30, 45) * DAY))
                self._push(nurture_s, _STATUS, hidden.index, "Nurturing")
            self._push(max(qualified, first_touch + 120), _STATUS, hidden.index, "Qualified")
            self._push(conv_s, _CONVERT, hidden.index)
            for _ in range(2 + _poisson(rng, 2.0 * scale)):
                after = conv_s + rng.uniform(0.05, 45.0) * DAY
                kind = rng.choice(("email_send", "meeting", "web_visit", "email_open", "call"))
                if kind in ("email_send", "email_open"):
                    detail = rng.choice(ONBOARDING_SUBJECTS)
                elif kind == "web_visit":
                    detail = rng.choice(("/docs/getting-started", "/docs/api", "/app/settings"))
                else:
                    detail = "Onboarding kickoff" if kind == "meeting" else "Onboarding check-in"
                self._push(int(after), _ACTIVITY, hidden.index, (kind, detail, None))
        elif not hidden.spam:
            status = "Unqualified" if rng.random() < _sigmoid(-0.5 - hidden.intent) else "Nurturing"
            self._push(_batch_time(c + int(rng.uniform(30, 120) * DAY)), _STATUS, hidden.index, status)

        # A duplicate record of the same human, merged into this one later.
        if rng.random() < self.dq_rate / 2 and not hidden.spam:
            self._schedule_duplicate(hidden, person, c, rng)

    def _schedule_duplicate(self, hidden: _Hidden, person: Person, c: int, rng: random.Random) -> None:
        dup = dataclasses.replace(person, key="", dq_faults=["duplicate"], status="Open", will_convert=False,
                                  created_at=person.created_at + timedelta(seconds=int(rng.uniform(1, 30) * DAY)))
        if person.email and rng.random() < 0.5:
            dup.email = person.email.upper()
        if rng.random() < 0.5:
            dup.title = None
        dup_index = len(self._pending)
        self._pending.append(dup)
        self._hidden.append(dataclasses.replace(hidden, index=dup_index, rng=_SPENT))
        dc = int(dup.created_at.timestamp() - EPOCH.timestamp())
        self._push(dc, _CREATE, dup_index)
        merge_s = dc + int(rng.uniform(3, 40) * DAY)
        for _ in range(1 + _poisson(rng, 1.0)):
            t = int(dc + rng.uniform(0, (merge_s - dc) / DAY) * DAY)
            self._push(t, _ACTIVITY, dup_index, ("web_visit", rng.choice(ORDINARY_PAGES), None))
        self._push(merge_s, _MERGE, dup_index, hidden.index)

    # --- emission -----------------------------------------------------------------------------

    def _sinks_for(self, crm: CRMName) -> list[FunnelSink]:
        return [sink for sink, only in self._sinks if only is None or only == crm]

    def _emit_person(self, person: Person) -> None:
        snapshot = copy.copy(person)  # sinks may keep the object: later changes must not leak in
        snapshot.dq_faults = list(person.dq_faults)
        for sink in self._sinks_for(person.crm):
            sink.put_person(snapshot)

    def _run_until(self, end_s: int) -> None:
        summary = self._summary
        heap = self._heap
        current = -1
        while heap and heap[0][0] <= end_s:
            t_s, kind, index, _seq, data = heapq.heappop(heap)
            person = self._pending[index]
            if person.deleted:
                continue
            if t_s != current:
                current = t_s
                self.clock.set(EPOCH + timedelta(seconds=t_s))
            if kind == _CREATE:
                self._person_counter += 1
                person.key = f"P{self._person_counter:06d}"
                self.people[person.key] = person
                self._index_by_key[person.key] = index
                if person.company_key and person.company_key not in self._emitted_companies:
                    self._emitted_companies.add(person.company_key)
                    company = self.companies[person.company_key]
                    for sink, _only in self._sinks:
                        sink.put_company(dataclasses.replace(company))
                self._emit_person(person)
                summary.new_leads += 1
            elif not person.key:
                continue  # defensive: events never precede creation
            elif kind == _ACTIVITY:
                activity_type, detail, campaign = data
                self._activity_counter += 1
                activity = Activity(key=f"A{self._activity_counter:08d}", person_key=person.key,
                                    type=activity_type, occurred_at=EPOCH + timedelta(seconds=t_s),
                                    detail=detail, campaign_key=campaign)
                for sink in self._sinks_for(person.crm):
                    sink.put_activity(activity)
                summary.new_activities += 1
                self.activity_count += 1
            elif kind == _STATUS:
                if person.status in ("Converted", data):
                    continue
                person.status = data
                self._emit_person(person)
                summary.status_changes += 1
            elif kind == _CONVERT:
                person.status = "Converted"
                person.converted_at = EPOCH + timedelta(seconds=t_s)
                self._emit_person(person)
                summary.conversions += 1
            elif kind == _MERGE:
                person.merged_into = self._pending[data].key
                person.deleted = True
                self._emit_person(person)
                for sink in self._sinks_for(person.crm):
                    sink.delete_person(person.key)
                summary.merges += 1
            elif kind == _DELETE:
                person.deleted = True
                for sink in self._sinks_for(person.crm):
                    sink.delete_person(person.key)
                summary.deletions += 1
        self._now_s = end_s
        self.clock.set(EPOCH + timedelta(seconds=end_s))

    def _take_summary(self, days: float) -> AdvanceSummary:
        summary = self._summary
        summary.days = days
        summary.now = self.clock.now().isoformat()
        self._summary = AdvanceSummary(days=0.0, now="")
        return summary

    def generate(self) -> AdvanceSummary:
        """Simulate the whole history into the attached sinks; the clock ends at epoch + history_days."""
        if self._generated:
            raise RuntimeError("generate() runs once; use advance()")
        self._generated = True
        for sink, _only in self._sinks:
            for owner in self.owners:
                sink.put_owner(dataclasses.replace(owner))
            for queue in self.queues:
                sink.put_queue(dataclasses.replace(queue))
            for campaign in self.campaigns:
                sink.put_campaign(dataclasses.replace(campaign))
        if not self._from_csv:
            self._draw_history()
        self._run_until(self.history_days * DAY)
        return self._take_summary(float(self.history_days))

    def _draw_history(self) -> None:
        # Creation times follow a density rising linearly by GROWTH over the history.
        rng = np.random.default_rng([self.seed, 7])
        u = np.sort(rng.random(self.leads))
        g = GROWTH - 1.0
        x = (np.sqrt(1.0 + g * (g + 2.0) * u) - 1.0) / g  # inverse CDF of (1 + g x) on [0, 1]
        created = np.minimum((x * self.history_days * DAY).astype(np.int64), self.history_days * DAY - 1)
        for i, c in enumerate(created.tolist()):
            self._draw_person(i, int(c), f"crmsim/{self.seed}/history/{i}")
        for hidden in self._hidden[: self.leads]:
            self._draw_activity(hidden)
        self._calibrate()
        for hidden in self._hidden[: self.leads]:
            self._decide(hidden)

    def advance(self, days: float) -> AdvanceSummary:
        """Continue the simulation by ``days``: new leads (at the history's final rate, per day
        seeded on its own), their activity, conversions and status changes of everyone."""
        if not self._generated:
            raise RuntimeError("call generate() before advance()")
        if not days > 0:
            raise ValueError("days must be positive")
        end_s = self._now_s + int(round(days * DAY))
        if not self._from_csv:
            rate = self.leads / self.history_days * 2 * GROWTH / (1 + GROWTH)
            while self._next_day * DAY <= end_s:
                day = self._next_day
                rng = random.Random(f"crmsim/{self.seed}/day/{day}")
                count = _poisson(rng, rate)
                times = sorted(rng.randrange(DAY) for _ in range(count))
                for j, offset in enumerate(times):
                    index = len(self._pending)
                    self._draw_person(index, day * DAY + offset, f"crmsim/{self.seed}/day/{day}/{j}")
                    self._schedule(self._hidden[index])
                self._next_day += 1
        self._run_until(end_s)
        return self._take_summary(days)

    def _load_population(self, population: CsvPopulation) -> None:
        for company in population.companies:
            self.companies[company.key] = company
        for person, outcome_s in zip(population.people, population.converted_offsets, strict=True):
            index = len(self._pending)
            self._pending.append(person)
            self._hidden.append(_Hidden(index=index, intent=0.0, fit=(0.0, 0.0), regime=0,
                                        seniority="", department="", band="", rng=_SPENT,
                                        probability_known=False))
            c = int(person.created_at.timestamp() - EPOCH.timestamp())
            self._push(c, _CREATE, index)
            self._push(c + 60, _STATUS, index, "Working")
            if outcome_s is not None:
                self._push(c + outcome_s, _CONVERT, index)
            else:
                self._push(_batch_time(c + HORIZON_DAYS * DAY), _STATUS, index, "Unqualified")
        for local_index, activity_type, offset_s, detail in population.activities:
            created = self._pending[local_index].created_at
            c = int(created.timestamp() - EPOCH.timestamp())
            self._push(c + offset_s, _ACTIVITY, local_index, (activity_type, detail, None))

    # --- ground truth ---------------------------------------------------------------------------

    def truth(self) -> list[dict[str, Any]]:
        """Hidden ground truth for every person created so far, in creation order.

        ``true_probability``: P(converted within 90 days of ``created_at``) given all the world
        knows at creation (None for CSV-imported people). ``converted``/``converted_at``: the
        conversion if it happened by now. ``converted_within_90d``: converted by now and within 90
        days of creation; ``horizon_elapsed``: 90 days have passed since creation (the label is
        final). ``crm_id`` comes from the sink of the person's CRM (None without one).
        """
        now = self.clock.now()
        id_sinks: dict[CRMName, FunnelSink] = {}
        for sink, only in self._sinks:
            if only is not None:
                id_sinks.setdefault(only, sink)
        rows = []
        for person in self.people.values():
            hidden = self._hidden[self._index_by_key[person.key]]
            id_sink = id_sinks.get(person.crm)
            converted_at = person.converted_at
            rows.append({
                "person_key": person.key,
                "crm": person.crm,
                "crm_id": id_sink.crm_id(person.key) if id_sink is not None else None,
                "created_at": person.created_at.isoformat(),
                "true_probability": round(person.true_probability, 6) if hidden.probability_known else None,
                "converted": converted_at is not None,
                "converted_at": converted_at.isoformat() if converted_at else None,
                "converted_within_90d": converted_at is not None
                and converted_at - person.created_at <= timedelta(days=HORIZON_DAYS),
                "horizon_elapsed": now - person.created_at >= timedelta(days=HORIZON_DAYS),
                "deleted": person.deleted,
                "merged_into": person.merged_into,
                "dq_faults": list(person.dq_faults),
            })
        return rows

    def true_probability_at(self, person_key: str, snapshot: datetime,
                            horizon_days: float = HORIZON_DAYS) -> float | None:
        """P(the person converts in (snapshot, snapshot + horizon] | latent state, not converted
        by the snapshot): the oracle for a point-in-time model scoring at ``snapshot``.

        None for CSV-imported people. At ``snapshot == created_at`` with the default horizon it
        equals ``true_probability``.
        """
        hidden = self._hidden[self._index_by_key[person_key]]
        if not hidden.probability_known:
            return None
        person = self._pending[hidden.index]
        p_ever = person.true_probability / WITHIN_HORIZON_SHARE
        age = max(0.0, (snapshot - person.created_at).total_seconds() / DAY)
        before = p_ever * conversion_time_cdf(age)
        within = p_ever * (conversion_time_cdf(age + horizon_days) - conversion_time_cdf(age))
        return within / (1.0 - before) if before < 1.0 else 0.0

    def hidden_attributes(self, person_key: str) -> dict[str, Any]:
        """The hidden state of one person (intent, fit, regime, seniority, ...), for tests and docs.

        ``early_engagement`` (E, valued with the person's regime) and ``committee`` (k) are what,
        with fit, set ``true_probability`` (see ``docs/crmsim.md``).
        """
        hidden = self._hidden[self._index_by_key[person_key]]
        return {"intent": hidden.intent, "fit": hidden.fit[hidden.regime], "regime": hidden.regime,
                "seniority": hidden.seniority, "department": hidden.department, "size_band": hidden.band,
                "early_engagement": hidden.engagement[hidden.regime], "committee": hidden.committee}

    @property
    def now(self) -> datetime:
        """The simulated present."""
        return self.clock.now()


def conversion_time_cdf(days: float) -> float:
    """P(a converter has converted within ``days`` of creation), the law the funnel draws from."""
    if days < MIN_CONVERSION_DAYS:
        return 0.0
    shape, scale = CONVERSION_GAMMA  # shape 2: the gamma CDF has a closed form
    if days < HORIZON_DAYS - 0.01:
        y = (days - MIN_CONVERSION_DAYS) / scale
        return WITHIN_HORIZON_SHARE * (1.0 - math.exp(-y) * (1.0 + y))
    low, high = LATE_CONVERSION_DAYS
    late = min(max((days - low) / (high - low), 0.0), 1.0)
    return WITHIN_HORIZON_SHARE + (1.0 - WITHIN_HORIZON_SHARE) * late


_SPENT = random.Random(0)  # placeholder generator for people whose schedule is drawn


def _next_blast(t_s: float) -> int:
    """The next Tuesday or Thursday 14:00 UTC at or after ``t_s`` (seconds since the epoch)."""
    when = EPOCH + timedelta(seconds=int(t_s))
    for step in range(8):
        day = (when + timedelta(days=step)).replace(hour=14, minute=0, second=0, microsecond=0)
        if day.weekday() in (1, 3) and day >= when:
            return int((day - EPOCH).total_seconds())
    return int(t_s)  # unreachable: a Tuesday or Thursday falls within any 8 days


def _batch_time(t_s: int) -> int:
    """The nightly CRM batch job (02:00 UTC) after ``t_s``: status sweeps share one stamp."""
    day_start = t_s - t_s % DAY
    batch = day_start + 2 * 3600
    return batch if batch >= t_s else batch + DAY

