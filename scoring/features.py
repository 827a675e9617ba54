"""Point-in-time features of leads: one function builds them for training and for scoring.

:func:`build_feature_frame` sees a lead as it was at a snapshot time: firmographics, persona and
source fields of the lead (fields that change with the outcome - status, conversion, owner - and
the CRM's ``raw`` record are never read), activity strictly before the snapshot, and the other
leads of the same company created before the snapshot. Everything is vectorised with pandas and
numpy so scoring tens of thousands of leads takes seconds.

One job in one file (past 500 lines): the store readers (:func:`load_leads_frame`,
:func:`load_activities_frame`, :func:`load_company_peers`) fill exactly the columns the builder
reads (:data:`LEAD_COLUMNS`, :data:`ACTIVITY_COLUMNS`), in the types it expects; the two change
together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Select, String, cast, func, select
from sqlalchemy.orm import Session

from scoring import personas
from scoring.frame import PLACEHOLDERS, FeatureSpec
from store.db import IDS_PER_STATEMENT, among, driver_rows
from store.models import ACTIVITY_TYPES, Activity, Lead

# Engagement the lead did (an e-mail *sent* to them is our action, not theirs: not counted).
ENGAGEMENT_TYPES: tuple[str, ...] = tuple(t for t in ACTIVITY_TYPES if t != "email_send")
WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)
CONTENT_TYPES: tuple[str, ...] = ("content_download", "webinar")
HIGH_INTENT_PATTERN = re.compile(r"pricing|demo|contact[-_ ]?sales", re.IGNORECASE)
ATTRIBUTE_PREFIX = "attr_"
# The buying committee is the colleagues who became leads recently: a count over the whole CRM
# history would grow with the CRM's age rather than with the account's interest.
COMMITTEE_WINDOW_DAYS = 90

# Numbers beyond these are typing errors ("employees: 999999999"), not companies.
MAX_EMPLOYEES = 3_000_000
MAX_REVENUE = 1e13

EMPLOYEE_BANDS: tuple[tuple[float, str], ...] = (
    (10, "1-10"),
    (50, "11-50"),
    (200, "51-200"),
    (1000, "201-1000"),
    (5000, "1001-5000"),
    (float("inf"), "5001+"),
)
REVENUE_BANDS: tuple[tuple[float, str], ...] = (
    (1e6, "<1M"),
    (1e7, "1M-10M"),
    (5e7, "10M-50M"),
    (2.5e8, "50M-250M"),
    (1e9, "250M-1B"),
    (float("inf"), "1B+"),
)
_EXTRA_PLACEHOLDERS = frozenset({"unknown", "[not provided]", "not applicable", "please select", "xxx"})
_ALL_PLACEHOLDERS = PLACEHOLDERS | _EXTRA_PLACEHOLDERS
_COUNTRY_ALIASES = {
    "us": "United States", "usa": "United States", "u.s.": "United States", "u.s.a.": "United States",
    "united states of america": "United States", "america": "United States",
    "uk": "United Kingdom", "u.k.": "United Kingdom", "great britain": "United Kingdom",
    "england": "United Kingdom", "gb": "United Kingdom",
    "deutschland": "Germany", "de": "Germany", "fr": "France", "uae": "United Arab Emirates",
}
_JUNK_NAME = re.compile(r"^(?:test\w*|asdf\w*|qwer\w*|x+|abc|aaa+|none|null|n/?a|-+|\.+|\d+)$", re.IGNORECASE)
_JUNK_EMAIL = re.compile(r"(?:^test|^noreply|^no-reply|@example\.|@test\.|@mailinator\.)", re.IGNORECASE)
_DQ_FIELDS: tuple[str, ...] = (
    "email", "title", "company", "industry", "employee_band", "revenue_band", "country", "lead_source",
)

NUMERIC_FEATURES: tuple[str, ...] = (
    *(f"{t}_{w}d" for t in ENGAGEMENT_TYPES for w in WINDOWS_DAYS),
    "engagement_30d",
    "days_since_last_engagement",
    "engagement_velocity",
    "content_depth_7d",
    "content_depth_30d",
    "high_intent_visits_7d",
    "high_intent_visits_30d",
    "committee_size",
    "lead_age_days",
    "missing_fields",
    "junk_flags",
)
CATEGORICAL_FEATURES: tuple[str, ...] = (
    "industry",
    "employee_band",
    "revenue_band",
    "country",
    "seniority",
    "department",
    "lead_source",
    "campaign",
    "email_type",
)
FEATURE_SPEC = FeatureSpec(numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES)

# The lead columns the feature builder reads (and the loader returns). Outcome fields are loaded
# for labelling only; build_feature_frame never reads them.
LEAD_COLUMNS: tuple[str, ...] = (
    "id", "connection_id", "crm_id", "email", "first_name", "last_name", "title", "company",
    "company_key", "industry", "employees", "annual_revenue", "country", "lead_source", "campaign",
    "crm_created_at", "is_converted", "converted_at", "is_deleted", "attributes", "inputs_hash",
)
# What building features reads of a lead (:func:`build_feature_frame`), plus its id and inputs
# hash: a scoring run reads no more (its lifecycle is read where the writes need it,
# :func:`scoring.score_writes.read_prior`; its CRM references are copied by the database into the
# outbox rows it makes, :func:`scoring.score_writes.apply_scores`).
FEATURE_LEAD_COLUMNS: tuple[str, ...] = tuple(
    c for c in LEAD_COLUMNS if c not in {"connection_id", "crm_id", "is_converted", "converted_at", "is_deleted"})
ACTIVITY_COLUMNS: tuple[str, ...] = ("lead_id", "type", "occurred_at", "detail")
_DAY_NS = 86_400 * 10**9


# ---------------------------------------------------------------------------- loaders


def _utc(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True).astype("datetime64[ns, UTC]")


# Times are read as text and parsed a column at a time: PostgreSQL's driver would build one
# aware datetime object per value, which pandas then converts one by one.
_TIME_COLUMNS = frozenset({"crm_created_at", "converted_at", "occurred_at"})
# JSON is read as its text too: PostgreSQL's driver would parse every row's object, where the
# same few texts repeat (:func:`_json_objects` parses each once).
_TEXT_COLUMNS = _TIME_COLUMNS | {"attributes"}


def _as_text(column: Any) -> Any:
    return cast(column, String)


def _utc_text(s: pd.Series) -> pd.Series:
    """ISO 8601 texts (SQLite: naive UTC; PostgreSQL: with their offset) as UTC times."""
    return pd.to_datetime(s, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")


def _json_objects(values: pd.Series) -> list[dict[str, Any]]:
    """JSON object columns, read as text, as dicts: each distinct text parsed once (most leads
    share a few sets of custom fields, often none), each row given its own dict."""
    parsed: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for v in values:
        if isinstance(v, str):
            held = parsed.get(v)
            if held is None:
                loaded = json.loads(v)
                held = parsed[v] = loaded if isinstance(loaded, dict) else {}
            out.append(dict(held))
        else:
            out.append(v if isinstance(v, dict) else {})
    return out


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    unique = sorted({int(i) for i in ids})
    return [unique[i : i + IDS_PER_STATEMENT] for i in range(0, len(unique), IDS_PER_STATEMENT)]


def load_leads_frame(
    session: Session, lead_ids: Sequence[int] | None = None, *, columns: Sequence[str] = LEAD_COLUMNS
) -> pd.DataFrame:
    """Leads as a DataFrame with ``columns`` (default :data:`LEAD_COLUMNS`; deleted leads
    included, callers filter; :data:`FEATURE_LEAD_COLUMNS` is what features need).

    ``lead_ids`` None loads every lead. Times are ``datetime64[ns, UTC]``.
    """
    names = list(columns)
    cols = [_as_text(getattr(Lead, c)) if c in _TEXT_COLUMNS else getattr(Lead, c) for c in names]
    rows: list[Any] = []
    if lead_ids is None:
        rows.extend(driver_rows(session, select(*cols).order_by(Lead.id)))
    else:
        for chunk in _chunks(lead_ids):
            rows.extend(driver_rows(session, select(*cols).where(among(session, Lead.id, chunk)).order_by(Lead.id)))
    df = pd.DataFrame.from_records(rows, columns=names)
    for c in ("crm_created_at", "converted_at"):
        if c in df:
            df[c] = _utc_text(df[c])
    for c in ("employees", "annual_revenue"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("is_converted", "is_deleted"):
        if c in df:
            df[c] = df[c].astype(bool)
    if "attributes" in df:
        df["attributes"] = _json_objects(df["attributes"])
    return df


def load_activities_frame(
    session: Session, lead_ids: Sequence[int] | None, before: datetime, *, since: datetime | None = None
) -> pd.DataFrame:
    """Non-deleted activities of ``lead_ids`` (None = all leads) that occurred strictly before ``before``.

    ``since`` bounds the history read: features look back at most :data:`WINDOWS_DAYS`, except
    the time since the last engagement, which :func:`load_last_engagements` completes (pass its
    result to :func:`build_feature_frame` as ``engaged_before``).
    """
    cols = [_as_text(getattr(Activity, c)) if c in _TIME_COLUMNS else getattr(Activity, c) for c in ACTIVITY_COLUMNS]
    base = select(*cols).where(
        Activity.lead_id.is_not(None), Activity.is_deleted.is_(False), Activity.occurred_at < before
    )
    if since is not None:
        base = base.where(Activity.occurred_at >= since)
    rows: list[Any] = []
    if lead_ids is None:
        rows.extend(driver_rows(session, base))
    else:
        for chunk in _chunks(lead_ids):
            rows.extend(driver_rows(session, base.where(among(session, Activity.lead_id, chunk))))
    df = pd.DataFrame.from_records(rows, columns=list(ACTIVITY_COLUMNS))
    df["lead_id"] = df["lead_id"].astype("int64")
    df["occurred_at"] = _utc_text(df["occurred_at"])
    return df


def load_last_engagements(session: Session, lead_ids: Sequence[int], before: datetime) -> pd.Series:
    """Per lead of ``lead_ids``, the time of its latest engagement (a non-deleted activity of
    :data:`ENGAGEMENT_TYPES`) strictly before ``before``; leads without one are absent.

    With ``load_activities_frame(..., since=before)`` it gives the features of the whole history:
    only ``days_since_last_engagement`` looks further back than the activity windows, and only
    at the latest engagement. One aggregate row per lead instead of every older activity.
    """
    # Per lead, its activities newest first from ``before`` (the (lead_id, occurred_at) index)
    # until the first engagement: a row or two per lead, not all of its older history.
    latest = (select(_as_text(Activity.occurred_at))
              .where(Activity.lead_id == Lead.id, Activity.is_deleted.is_(False), Activity.occurred_at < before,
                     Activity.type.in_(ENGAGEMENT_TYPES))
              .order_by(Activity.occurred_at.desc()).limit(1).scalar_subquery())
    rows: list[Any] = []
    for chunk in _chunks(lead_ids):
        rows.extend(driver_rows(session, select(Lead.id, latest).where(among(session, Lead.id, chunk))))
    df = pd.DataFrame.from_records(rows, columns=["lead_id", "occurred_at"]).dropna()
    return pd.Series(_utc_text(df["occurred_at"]).to_numpy(), index=df["lead_id"].astype("int64").to_numpy(),
                     name="occurred_at")


def load_company_peers(
    session: Session, company_keys: Sequence[str], *, before: datetime | None = None
) -> pd.DataFrame:
    """The non-deleted leads at the given companies, for the buying-committee feature.

    Without ``before``: one row per lead (id, company_key, crm_created_at). With ``before`` (one
    snapshot for every row, as when scoring now): one row per company counting its leads created
    in the :data:`COMMITTEE_WINDOW_DAYS` before it (company_key, crm_created_at = the latest
    creation, count), which keeps the read small however many colleagues a company has. When
    scoring a batch, the batch alone would miss colleagues outside it.
    """
    rows: list[Any] = []
    keys = sorted({k for k in company_keys if k})
    for i in range(0, len(keys), IDS_PER_STATEMENT):
        where = [among(session, Lead.company_key, keys[i : i + IDS_PER_STATEMENT]), Lead.is_deleted.is_(False)]
        stmt: Select[Any]
        if before is None:
            stmt = select(Lead.id, Lead.company_key, _as_text(Lead.crm_created_at)).where(*where)
        else:
            since = before - timedelta(days=COMMITTEE_WINDOW_DAYS)
            stmt = (
                select(Lead.company_key, _as_text(func.max(Lead.crm_created_at)), func.count(Lead.id))
                .where(*where, Lead.crm_created_at < before, Lead.crm_created_at >= since)
                .group_by(Lead.company_key)
            )
        rows.extend(driver_rows(session, stmt))
    columns = ["id", "company_key", "crm_created_at"] if before is None else ["company_key", "crm_created_at", "count"]
    df = pd.DataFrame.from_records(rows, columns=columns)
    df["crm_created_at"] = _utc_text(df["crm_created_at"])
    return df


# ------------------------------------------------------------------- lead field normalisation


def clean_text(s: pd.Series, *, max_len: int = 64) -> pd.Series:
    """Strip, collapse spaces, title-case; placeholders ("N/A", "Select", "-1", "none") → NA.

    Cleans each distinct value once, in plain Python (a column of 100,000 leads holds a few hundred
    industries; pandas' string methods cost a fixed part per call, several per column).
    """
    return _by_distinct(s, lambda v: _cleaned(v, max_len))


_SPACES = re.compile(r"\s+")


def _cleaned(value: str, max_len: int) -> str | None:
    """One text as :func:`clean_text` gives it: None for a placeholder."""
    text = _SPACES.sub(" ", value.strip())
    lower = text.lower()
    return None if lower in _ALL_PLACEHOLDERS else lower[:max_len].title()


def _by_distinct(s: pd.Series, clean: Callable[[str], str | None]) -> pd.Series:
    """``clean`` of each distinct text of ``s`` (values as text; missing stays NA), as a string
    Series on ``s``'s index: one Python call per distinct value, not per row."""
    codes, uniques = pd.factorize(s.astype("string"))
    values = pd.array([clean(u) for u in uniques.tolist()], dtype="string")
    return pd.Series(values.take(codes, allow_fill=True), index=s.index, dtype="string")


def _matching(s: pd.Series, test: Callable[[str], object]) -> np.ndarray:
    """1 where ``test`` of the row's text is true, 0 where not or missing (int64): each distinct
    text tested once."""
    codes, uniques = pd.factorize(s.astype("string"))
    hits = np.array([bool(test(u)) for u in uniques.tolist()] + [False], dtype="int64")
    return hits[codes]  # code -1 (missing) takes the appended False


# The lead's text fields a reason names (scoring.reasons.NAMED_CONCEPTS), with clean_text's length.
NAMED_FIELDS: dict[str, int] = {"industry": 64, "lead_source": 64, "campaign": 80}


def crm_spellings(session: Session) -> dict[str, dict[str, str]]:
    """Per named field, each value as the features hold it (:func:`clean_text`: "Content: Roi
    Guide") → its most common spelling in the CRM's records (stripped, spaces collapsed:
    "Content: ROI Guide"; an enumeration code such as "OTHER_CAMPAIGNS" as "Other campaigns"),
    where the two differ. One grouped query per field over the stored leads."""
    out: dict[str, dict[str, str]] = {}
    for name, max_len in NAMED_FIELDS.items():
        column = getattr(Lead, name)
        rows = session.execute(select(column, func.count()).where(column.is_not(None)).group_by(column)).all()
        raw = pd.Series([r[0] for r in rows], dtype="string")
        held = clean_text(raw, max_len=max_len)
        tidy = raw.str.strip().str.replace(r"\s+", " ", regex=True).str.slice(0, max_len)
        # An enumeration's internal value (HubSpot's "OTHER_CAMPAIGNS") reads as its label does.
        codes = tidy.str.fullmatch(r"[A-Z0-9]+(?:_[A-Z0-9]+)+").fillna(False).astype(bool)
        tidy = tidy.where(~codes, tidy.str.replace("_", " ").str.capitalize())
        best: dict[str, tuple[int, str]] = {}
        for key, text, count in zip(held.tolist(), tidy.tolist(), (int(r[1]) for r in rows), strict=True):
            if key is pd.NA or text is pd.NA:
                continue
            # The most records, then the first in code-point order: the same on every run.
            if key not in best or (-count, text) < (-best[key][0], best[key][1]):
                best[key] = (count, text)
        out[name] = {key: text for key, (_count, text) in best.items() if text != key}
    return out


def normalise_country(s: pd.Series) -> pd.Series:
    """Country names in one spelling ("usa", "U.S." → "United States")."""

    def one(value: str) -> str | None:
        text = value.strip().lower()
        return _cleaned(_COUNTRY_ALIASES.get(text, text), 64)

    return _by_distinct(s, one)


def _band(values: pd.Series, bands: tuple[tuple[float, str], ...], low: float, high: float) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce").astype("float64")
    valid = (num >= low) & (num <= high)
    edges = [-np.inf] + [b for b, _ in bands]
    labels = [name for _, name in bands]
    out = pd.cut(num.where(valid), bins=edges, labels=labels, right=True)
    return pd.Series(out.astype(object), index=values.index).where(valid, None).astype("string")


def employee_band(employees: pd.Series) -> pd.Series:
    """Headcount bands ("201-1000"); absent, zero, negative or absurd headcounts → NA."""
    return _band(employees, EMPLOYEE_BANDS, 1, MAX_EMPLOYEES)


def revenue_band(revenue: pd.Series) -> pd.Series:
    """Annual revenue bands in USD ("10M-50M"); absent, non-positive or absurd → NA."""
    return _band(revenue, REVENUE_BANDS, 1, MAX_REVENUE)


def _absurd(values: pd.Series, high: float) -> pd.Series:
    num = pd.to_numeric(values, errors="coerce")
    return (num.notna() & ((num < 1) | (num > high))).astype("int64")


# ------------------------------------------------------------------------- feature frame


def _snapshot_series(leads: pd.DataFrame, snapshots: pd.Series | datetime) -> pd.Series:
    if isinstance(snapshots, datetime):
        if snapshots.tzinfo is None:
            raise ValueError("snapshot time must be timezone-aware (UTC)")
        return _utc(pd.Series([snapshots] * len(leads), index=leads.index))
    if len(snapshots) != len(leads):
        raise ValueError("snapshots must have one time per lead row")
    return _utc(pd.Series(snapshots.to_numpy(), index=leads.index))


def _company_keys(leads: pd.DataFrame) -> pd.Series:
    given = leads["company_key"] if "company_key" in leads else pd.Series(None, index=leads.index)
    missing = given.isna().to_numpy()
    derived: list[str | None] = [None] * len(leads)
    # Only leads without a stored key need one derived (the store keeps it for synced leads).
    for i in np.flatnonzero(missing).tolist():
        c, e = leads["company"].iat[i], leads["email"].iat[i]
        derived[i] = personas.company_key(c if isinstance(c, str) else None, e if isinstance(e, str) else None)
    keys = given.astype("string").where(~missing, pd.Series(derived, index=leads.index, dtype="string"))
    return keys


def _committee_size(
    lead_ids: np.ndarray,
    keys: pd.Series,
    snaps: pd.Series,
    peers: pd.DataFrame,
    stored_keys: pd.Series,
    created: pd.Series,
) -> np.ndarray:
    """Other leads at the same company created in the window before each row's snapshot.

    The window is [snapshot - COMMITTEE_WINDOW_DAYS, snapshot).

    ``peers`` rows are leads (with ``id``) or per-company counts (with ``count``; see
    :func:`load_company_peers`), which include every lead with a stored company key.
    """
    n = len(lead_ids)
    out = np.zeros(n, dtype="float64")
    known = keys.notna().to_numpy()
    peers = peers[peers["company_key"].notna()]
    if not known.any() or peers.empty:
        return out
    codes, _ = pd.factorize(pd.concat([peers["company_key"].astype("string"), keys[known]]))
    peer_codes = codes[: len(peers)].astype("int64")
    row_codes = codes[len(peers) :].astype("int64")
    # One sortable int per (company, second); a cumulative sum over the sorted peers then counts
    # (weighted) peers before a time with two binary searches.
    scale = np.int64(10**11)
    peer_sec = _utc(peers["crm_created_at"]).astype("int64").to_numpy() // 10**9
    row_sec = snaps[known].astype("int64").to_numpy() // 10**9
    weights = peers["count"].to_numpy(dtype="float64") if "count" in peers else np.ones(len(peers))
    composite = peer_codes * scale + peer_sec
    order = np.argsort(composite, kind="stable")
    composite = composite[order]
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    window = np.int64(COMMITTEE_WINDOW_DAYS * 86_400)
    before = np.searchsorted(composite, row_codes * scale + row_sec, side="left")
    start = np.searchsorted(composite, row_codes * scale + (row_sec - window), side="left")
    count = cumulative[before] - cumulative[start]
    # The lead itself is among the peers when created before the snapshot: not its own colleague.
    if "id" in peers:
        peer_created = dict(zip(peers["id"].to_numpy().tolist(), peer_sec.tolist(), strict=True))
        self_sec = np.array([peer_created.get(int(i), np.iinfo(np.int64).max) for i in lead_ids[known]])
        count -= ((self_sec < row_sec) & (self_sec >= row_sec - window)).astype("float64")
    else:
        own = stored_keys[known].astype("string")
        counted = (own.notna() & (own == keys[known])).fillna(False).to_numpy(dtype=bool)
        own_sec = _utc(created[known]).astype("int64").to_numpy() // 10**9
        count -= (counted & (own_sec < row_sec) & (own_sec >= row_sec - window)).astype("float64")
    out[known] = np.maximum(count, 0)
    return out


def _activity_features(
    lead_ids: np.ndarray, snaps: pd.Series, activities: pd.DataFrame, engaged_before: pd.Series | None = None
) -> dict[str, np.ndarray]:
    n = len(lead_ids)
    n_types = len(ENGAGEMENT_TYPES)
    rows = pd.DataFrame({"row": np.arange(n), "lead_id": lead_ids.astype("int64"),
                         "snap": snaps.astype("int64").to_numpy()})
    act = activities.loc[:, list(ACTIVITY_COLUMNS)].copy()
    act["lead_id"] = act["lead_id"].astype("int64")
    act["at"] = _utc(act["occurred_at"]).astype("int64")
    m = act.merge(rows, on="lead_id", how="inner")
    # Strictly before the snapshot: an event at the snapshot instant is not yet known.
    m = m[m["at"].to_numpy() < m["snap"].to_numpy()]
    row = m["row"].to_numpy()
    age = (m["snap"].to_numpy() - m["at"].to_numpy()) / _DAY_NS
    type_codes = {t: i for i, t in enumerate(ENGAGEMENT_TYPES)}
    code = m["type"].map(type_codes).fillna(-1).to_numpy(dtype="int64")
    engaged = code >= 0
    detail_codes, detail_values = pd.factorize(m["detail"].astype("string"))
    out: dict[str, np.ndarray] = {}

    for w in WINDOWS_DAYS:
        mask = engaged & (age < w)
        counts = np.bincount(row[mask] * n_types + code[mask], minlength=n * n_types).reshape(n, n_types)
        for j, t in enumerate(ENGAGEMENT_TYPES):
            out[f"{t}_{w}d"] = counts[:, j].astype("float64")
        if w == 30:
            out["engagement_30d"] = counts.sum(axis=1).astype("float64")

    last = np.full(n, np.nan)
    if engaged.any():
        mins = pd.Series(age[engaged]).groupby(row[engaged]).min()
        last[mins.index.to_numpy()] = np.floor(mins.to_numpy())
    if engaged_before is not None and len(engaged_before):
        # Rows without an engagement among the activities read: their latest earlier one (any
        # engagement read is more recent than it), as if that activity had been read.
        earlier = _utc(pd.Series(lead_ids).map(engaged_before))
        earlier_ns = earlier.astype("int64").to_numpy()
        snap_ns = rows["snap"].to_numpy()
        fill = np.isnan(last) & earlier.notna().to_numpy() & (earlier_ns < snap_ns)
        last[fill] = np.floor((snap_ns[fill] - earlier_ns[fill]) / _DAY_NS)
    out["days_since_last_engagement"] = last

    prev = engaged & (age >= 30) & (age < 60)
    out["engagement_velocity"] = out["engagement_30d"] - np.bincount(row[prev], minlength=n)

    is_content = np.isin(code, [ENGAGEMENT_TYPES.index(t) for t in CONTENT_TYPES])
    # String work once per distinct detail (page paths and content titles repeat), then by code.
    distinct = pd.Series(detail_values, dtype="string")
    lower_of = np.array([*distinct.str.lower().to_numpy(dtype=object), None], dtype=object)  # code -1 → None
    intent_of = np.append(distinct.str.contains(HIGH_INTENT_PATTERN, regex=True).fillna(False)
                          .to_numpy(dtype=bool), False)
    content_key = lower_of[detail_codes]
    no_detail = detail_codes < 0
    if no_detail.any():
        content_key[no_detail] = m["type"].astype("string").str.lower().to_numpy(dtype=object)[no_detail]
    is_intent = (code == ENGAGEMENT_TYPES.index("web_visit")) & intent_of[detail_codes]
    for w in (7, 30):
        window = age < w
        sel = is_content & window
        distinct = pd.DataFrame({"row": row[sel], "key": content_key[sel]}).drop_duplicates()
        out[f"content_depth_{w}d"] = np.bincount(distinct["row"].to_numpy(dtype="int64"), minlength=n).astype(
            "float64"
        )
        out[f"high_intent_visits_{w}d"] = np.bincount(row[is_intent & window], minlength=n).astype("float64")
    return out


def _attribute_columns(leads: pd.DataFrame) -> pd.DataFrame:
    if "attributes" not in leads:
        return pd.DataFrame(index=leads.index)
    records = [a if isinstance(a, dict) else {} for a in leads["attributes"]]
    raw = pd.DataFrame.from_records(records, index=leads.index)
    out: dict[str, pd.Series] = {}
    for name in sorted(raw.columns, key=str):
        col = raw[name]
        safe = ATTRIBUTE_PREFIX + re.sub(r"[^0-9a-zA-Z_]+", "_", str(name)).strip("_").lower()
        as_number = pd.to_numeric(col, errors="coerce")
        if col.notna().any() and as_number.notna().sum() == col.notna().sum() and not pd.api.types.is_bool_dtype(col):
            out[safe] = as_number.astype("float64")
        else:
            out[safe] = clean_text(col.map(lambda v: None if v is None else str(v)).astype("string"))
    return pd.DataFrame(out, index=leads.index)


def build_feature_frame(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    snapshots: pd.Series | datetime,
    *,
    company_peers: pd.DataFrame | None = None,
    engaged_before: pd.Series | None = None,
) -> pd.DataFrame:
    """Features of each lead row as known at its snapshot time (same index as ``leads``).

    ``leads`` has :data:`LEAD_COLUMNS` (one row per example: a lead may appear once per snapshot);
    ``snapshots`` is one time for all rows or a Series aligned row by row. Only activity strictly
    before a row's snapshot counts; ``company_peers`` are the leads counted for the buying
    committee (default: the ``leads`` frame itself; see :func:`load_company_peers`). Outcome
    fields, owner and ``raw`` are never read. Columns: :data:`FEATURE_SPEC` plus ``attr_*``
    columns for mapped custom fields (see :func:`feature_spec_for`). ``activities`` read from a
    ``since`` on (see :func:`load_activities_frame`) need ``engaged_before``, each lead's latest
    engagement before it (:func:`load_last_engagements`), for the time since the last engagement.
    """
    snaps = _snapshot_series(leads, snapshots)
    lead_ids = leads["id"].to_numpy(dtype="int64")
    created = _utc(leads["crm_created_at"])
    features: dict[str, Any] = {}

    features.update(_activity_features(lead_ids, snaps, activities, engaged_before))
    keys = _company_keys(leads)
    peers = company_peers if company_peers is not None else leads[["id", "crm_created_at"]].assign(
        company_key=keys
    ).drop_duplicates("id")
    stored = leads["company_key"] if "company_key" in leads else pd.Series(None, index=leads.index)
    features["committee_size"] = _committee_size(lead_ids, keys, snaps, peers, stored, created)
    features["lead_age_days"] = np.floor(
        np.maximum((snaps - created).dt.total_seconds().to_numpy() / 86_400, 0)
    )

    cats: dict[str, pd.Series] = {
        "industry": clean_text(leads["industry"]),
        "employee_band": employee_band(leads["employees"]),
        "revenue_band": revenue_band(leads["annual_revenue"]),
        "country": normalise_country(leads["country"]),
        "lead_source": clean_text(leads["lead_source"]),
        "campaign": clean_text(leads["campaign"], max_len=80),
    }
    titles = leads["title"].astype("string")
    unique_titles = titles.dropna().unique()
    seniority_of = {t: personas.seniority(str(t)) for t in unique_titles}
    department_of = {t: personas.department(str(t)) for t in unique_titles}
    cats["seniority"] = titles.map(seniority_of).astype("string")
    cats["department"] = titles.map(department_of).astype("string")
    emails = leads["email"]
    cats["email_type"] = _by_distinct(emails, _email_type)

    present = {
        "email": cats["email_type"].notna(),
        "title": clean_text(leads["title"]).notna(),
        "company": clean_text(leads["company"]).notna(),
        "industry": cats["industry"].notna(),
        "employee_band": cats["employee_band"].notna(),
        "revenue_band": cats["revenue_band"].notna(),
        "country": cats["country"].notna(),
        "lead_source": cats["lead_source"].notna(),
    }
    features["missing_fields"] = sum((~present[f]).astype("int64") for f in _DQ_FIELDS).to_numpy(dtype="float64")
    junk = (
        _matching(leads["first_name"], lambda v: _JUNK_NAME.match(v.strip()))
        + _matching(leads["last_name"], lambda v: _JUNK_NAME.match(v.strip()))
        + _matching(emails, _JUNK_EMAIL.search)
        + (emails.notna() & cats["email_type"].isna()).astype("int64")  # an address with no domain
        + _absurd(leads["employees"], MAX_EMPLOYEES)
        + _absurd(leads["annual_revenue"], MAX_REVENUE)
    )
    features["junk_flags"] = junk.to_numpy(dtype="float64")

    frame = pd.DataFrame({k: np.asarray(v, dtype="float64") for k, v in features.items()}, index=leads.index)
    for name, series in cats.items():
        frame[name] = series.to_numpy(dtype=object, na_value=None)
    frame = frame[list(FEATURE_SPEC.columns)]
    attrs = _attribute_columns(leads)
    if not attrs.empty:
        frame = pd.concat([frame, attrs], axis=1)
    return frame


def _email_type(email: str) -> str | None:
    free = personas.is_free_mail(email)
    return None if free is None else "Free-mail" if free else "Corporate"


def feature_spec_for(frame: pd.DataFrame) -> FeatureSpec:
    """:data:`FEATURE_SPEC` plus the frame's ``attr_*`` columns, numeric or categorical by dtype."""
    numeric = list(FEATURE_SPEC.numeric)
    categorical = list(FEATURE_SPEC.categorical)
    for col in frame.columns:
        if not str(col).startswith(ATTRIBUTE_PREFIX):
            continue
        (numeric if pd.api.types.is_numeric_dtype(frame[col]) else categorical).append(str(col))
    return FeatureSpec(numeric=tuple(numeric), categorical=tuple(categorical))


def align_to_spec(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Add the spec's columns a frame lacks (custom fields nobody filled in now) as missing."""
    missing = [c for c in spec.columns if c not in frame.columns]
    if not missing:
        return frame
    extra = pd.DataFrame({c: [np.nan] * len(frame) for c in missing}, index=frame.index)
    return pd.concat([frame, extra], axis=1)
