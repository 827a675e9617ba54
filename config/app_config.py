"""The YAML file revops edit: connections (non-secret parts and field mappings), tier thresholds,
routing rules, schedules, training and monitoring knobs. Validated whole at load: a bad file
fails with one line naming the file, the key and what is wrong, and nothing starts half-configured.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.checks import check_ca_bundle, check_cron, check_http_url
from config.errors import ConfigError

TIERS: tuple[str, ...] = ("A", "B", "C", "D")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SalesforceFields(_Strict):
    """CRM field names leadscore writes on the Salesforce Lead."""

    score: str = "Lead_Score__c"
    tier: str = "Lead_Tier__c"
    reasons: str = "Lead_Score_Reasons__c"
    model: str = "Lead_Score_Model__c"
    scored_at: str = "Lead_Scored_At__c"
    likelihood: str = "Lead_Conversion_Likelihood__c"
    fit: str = "Lead_Fit_Score__c"
    engagement: str = "Lead_Engagement_Score__c"
    score_change: str = "Lead_Score_Change__c"
    # Read back: a rep's picklist (Too high / Too low / About right) and its optional comment.
    # null: feedback is not read (sync then does not ask for the fields).
    feedback: str | None = "Lead_Score_Feedback__c"
    feedback_comment: str | None = "Lead_Score_Feedback_Comment__c"
    # On Account (in the DX metadata that `crm setup --salesforce-metadata` writes).
    account_score: str = "Account_Lead_Score__c"
    account_engaged_people: str = "Account_Engaged_People__c"

    @staticmethod
    def stored_record(raw: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Where a synced lead's raw CRM record holds these fields: the Lead record itself."""
        return raw


class HubSpotFields(_Strict):
    """HubSpot contact properties leadscore writes (created by ``leadscore crm setup``)."""

    score: str = "leadscore_score"
    tier: str = "leadscore_tier"
    reasons: str = "leadscore_reasons"
    model: str = "leadscore_model"
    scored_at: str = "leadscore_scored_at"
    likelihood: str = "leadscore_likelihood"
    fit: str = "leadscore_fit"
    engagement: str = "leadscore_engagement"
    score_change: str = "leadscore_score_change"
    feedback: str | None = "leadscore_feedback"
    feedback_comment: str | None = "leadscore_feedback_comment"
    # Company properties.
    account_score: str = "leadscore_account_score"
    account_engaged_people: str = "leadscore_engaged_people"

    @staticmethod
    def stored_record(raw: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Where a synced lead's raw CRM record holds these properties: the contact's properties."""
        contact = raw.get("contact")
        record = contact.get("properties") if isinstance(contact, Mapping) else None
        return record if isinstance(record, Mapping) else None


# The written/read field names of each CRM kind (a connection's ``score_fields`` parse as these).
SCORE_FIELDS_BY_KIND: dict[str, type[SalesforceFields] | type[HubSpotFields]] = {
    "salesforce": SalesforceFields, "hubspot": HubSpotFields}


# Lead lifecycle defaults per CRM (connectors.lifecycle derives the state from these lists).
SALESFORCE_CLOSED_STATUSES: tuple[str, ...] = ("Closed - Converted", "Closed - Not Converted")
HUBSPOT_CLOSED_STATUSES: tuple[str, ...] = ("UNQUALIFIED",)
# lifecyclestage values at or past the conversion training counts ("opportunity"), in HubSpot's order.
HUBSPOT_CONVERTED_STAGES: tuple[str, ...] = ("opportunity", "customer", "evangelist")


class LifecycleConfig(_Strict):
    """Which CRM values take a lead out of "open" (it is then never rescored, written or routed).

    ``closed_statuses``: Salesforce Lead ``Status`` / HubSpot ``hs_lead_status`` values meaning
    closed (disqualified). ``converted_stages`` (HubSpot only): ``lifecyclestage`` values meaning
    converted. Unset lists take the connection kind's defaults.
    """

    closed_statuses: list[str] | None = None
    converted_stages: list[str] | None = None

    @field_validator("closed_statuses", "converted_stages")
    @classmethod
    def _clean(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        for value in values:
            if not value.strip():
                raise ValueError("an empty value (list the CRM values exactly as the CRM stores them)")
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"{duplicates[0]!r} is listed twice")
        return values


DEFAULT_BULK_THRESHOLD = 50_000


class ConnectionConfig(_Strict):
    """One CRM org/portal. Secrets are read from the environment variables named here."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
    kind: Literal["salesforce", "hubspot"]
    enabled: bool = True
    # Salesforce
    instance_url: str | None = None
    api_version: str = "59.0"
    domain: str | None = None  # My Domain for OAuth client-credentials, e.g. "acme.my"
    client_id: str | None = None
    ca_bundle: str | None = None  # a private CA (crmsim); None = system trust
    login_via_instance: bool = False  # route *.salesforce.com login calls to instance_url (crmsim)
    # HubSpot
    host: str | None = None  # API base; None = https://api.hubapi.com
    # Secrets by reference
    session_id_env: str | None = None
    client_secret_env: str | None = None
    access_token_env: str | None = None
    # Sync
    page_size: Annotated[int, Field(ge=1, le=2000)] | None = None
    overlap_seconds: Annotated[int, Field(ge=0, le=86_400)] = 300
    api_budget_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    # Seconds to wait for the CRM's answer to one call (connecting: 10 s). A call that gets no
    # answer in time is tried once more, then the CRM counts as unresponsive for a while
    # (connectors.retry.RetryPolicy): a hung CRM does not hold workers for long.
    read_timeout_s: Annotated[float, Field(gt=0.0, le=600.0)] = 120.0
    streams: list[str] | None = None  # None = every stream the connector knows
    # Celery workers: a first load of a windowed stream is cut into this many time windows, each
    # read by its own task (docs/scaling.md); 1 = one task per stream.
    first_load_windows: Annotated[int, Field(ge=1, le=64)] = 4
    # Salesforce: a first load (or --full) of a stream holding more records than this reads
    # through Bulk API 2.0 query jobs instead of REST pages; None = always REST.
    bulk_threshold: Annotated[int, Field(ge=1)] | None = DEFAULT_BULK_THRESHOLD
    # Extra CRM fields to read into ``lead.attributes`` (CRM field/property -> feature name).
    field_map: dict[str, str] = Field(default_factory=dict)
    score_fields: SalesforceFields | HubSpotFields | None = None
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)

    @model_validator(mode="before")
    @classmethod
    def _score_fields_by_kind(cls, data: Any) -> Any:
        # A plain mapping under score_fields means the fields of this connection's CRM: parse it
        # with that CRM's model so unset names get that CRM's defaults (not the other's).
        if isinstance(data, dict) and isinstance(data.get("score_fields"), dict):
            model = SCORE_FIELDS_BY_KIND.get(str(data.get("kind")), SalesforceFields)
            data = {**data, "score_fields": model.model_validate(data["score_fields"])}
        return data

    @field_validator("host")
    @classmethod
    def _host_is_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_http_url(value)
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_loads(cls, value: str | None) -> str | None:
        if value is not None:
            check_ca_bundle(value)
        return value

    @model_validator(mode="after")
    def _kind_specific(self) -> ConnectionConfig:
        if self.kind == "salesforce":
            if not self.instance_url:
                raise ValueError("instance_url is required for a salesforce connection")
            if not self.instance_url.startswith("https://"):
                raise ValueError("instance_url must start with https:// (Salesforce is HTTPS only)")
            check_http_url(self.instance_url, https_only=True)
            if self.score_fields is None:
                self.score_fields = SalesforceFields()
            if self.lifecycle.converted_stages is not None:
                raise ValueError("lifecycle.converted_stages is for hubspot connections "
                                 "(Salesforce marks converted leads with IsConverted)")
        else:
            if self.bulk_threshold not in (None, DEFAULT_BULK_THRESHOLD):
                raise ValueError("bulk_threshold is for salesforce connections (HubSpot has no Bulk API)")
            if self.score_fields is None:
                self.score_fields = HubSpotFields()
        return self

    @property
    def closed_statuses(self) -> frozenset[str]:
        """The statuses that close a lead on this connection (configured, or the kind's defaults)."""
        given = self.lifecycle.closed_statuses
        if given is not None:
            return frozenset(given)
        return frozenset(SALESFORCE_CLOSED_STATUSES if self.kind == "salesforce" else HUBSPOT_CLOSED_STATUSES)

    @property
    def converted_stages(self) -> frozenset[str]:
        """HubSpot ``lifecyclestage`` values (lower case) that mean converted on this connection."""
        given = self.lifecycle.converted_stages
        return frozenset(v.lower() for v in (given if given is not None else HUBSPOT_CONVERTED_STAGES))


class TierConfig(_Strict):
    """Initial tier policy: score thresholds (A >= a, B >= b, C >= c, else D) on the 1-99 rank score,
    likelihood thresholds (the same on the calibrated probability in percent) or capacity shares.

    The default cuts the rank: A is a lead better than 95 % of the champion's reference leads (on
    the demo's held-out leads the top 5 % is where conversion reaches 5× the overall rate)."""

    mode: Literal["score", "likelihood", "capacity"] = "score"
    thresholds: dict[str, float] = Field(default_factory=lambda: {"A": 95.0, "B": 80.0, "C": 50.0})

    @model_validator(mode="after")
    def _valid(self) -> TierConfig:
        validate_thresholds(self.mode, self.thresholds)
        return self


# Scores run from 1 to 99 (:func:`scoring.reference.rank`): a score-mode cut-off above 99 is a
# tier no lead can reach.
TOP_SCORE = 99
MAX_HOLDOUT_DAYS = 365  # training.holdout_days at most (a year of labelled leads held out)


def validate_thresholds(mode: str, thresholds: dict[str, float]) -> None:
    """Raise ValueError unless A, B, C are given, in range and leave every tier reachable."""
    unknown = sorted(set(thresholds) - {"A", "B", "C"})
    if unknown:
        raise ValueError(f"unknown tier {unknown[0]!r} (set A, B and C; D is what remains)")
    missing = [t for t in ("A", "B", "C") if t not in thresholds]
    if missing:
        raise ValueError(f"tier {missing[0]} has no threshold")
    values = [float(thresholds[t]) for t in ("A", "B", "C")]
    if mode in ("score", "likelihood"):
        top = TOP_SCORE if mode == "score" else 100
        high = next(((t, v) for t, v in zip(("A", "B", "C"), values, strict=True) if v > top), None)
        if mode == "score" and high is not None:
            raise ValueError(f"scores run from 1 to {TOP_SCORE}: {high[0]}={high[1]:g} would leave tier {high[0]} "
                             f"empty (score thresholds must be within (0, {TOP_SCORE}])")
        if high is not None or any(not v > 0 for v in values):
            raise ValueError(f"{mode} thresholds must be within (0, {top}]")
        if not values[0] > values[1] > values[2]:
            raise ValueError(f"thresholds must be ordered A > B > C (got A={values[0]:g} B={values[1]:g} "
                             f"C={values[2]:g})")
    else:
        if any(not 0 < v < 100 for v in values):
            raise ValueError("capacity shares must be percentages within (0, 100)")
        if sum(values) >= 100:
            raise ValueError("capacity shares of A, B and C must leave room for D (sum < 100%)")


class RoutingActionConfig(_Strict):
    type: Literal["assign_owner", "create_task", "add_to_campaign", "enroll_workflow", "set_property",
                  "pause_outreach"]
    # assign_owner: a queue (by name) or round-robin over owners (CRM user ids or emails)
    queue: str | None = None
    round_robin: list[str] | None = None
    # assign_owner: false = only a lead no user owns (Salesforce: owned by a queue; HubSpot: no
    # owner) changes owner; a lead a rep owns keeps them. None (absent) = true: every lead.
    overwrite: bool | None = None
    # create_task
    subject: str | None = None
    due_hours: Annotated[float, Field(ge=0)] = 24
    priority: str = "High"
    # add_to_campaign (Salesforce) / enroll_workflow (HubSpot)
    campaign: str | None = None
    workflow_id: str | None = None
    # enroll_workflow: "property" = the workflow enrolls contacts when leadscore writes the tier
    # property (no API call; the admin builds the trigger); "enrollment" = v2 API call per contact.
    trigger: Literal["property", "enrollment"] = "property"
    # set_property (HubSpot) / any field (Salesforce)
    property: str | None = None
    value: str | None = None
    connections: list[str] | None = None  # None = every connection
    # A lead back in this tier within this many days (the data's clock) does not get the action
    # again while the earlier one is pending, running or done (one hot-lead task per flip A-B-A,
    # not two; a round-robin owner kept). 0: every tier change.
    repeat_after_days: Annotated[float, Field(ge=0)] = 7

    @model_validator(mode="after")
    def _needs(self) -> RoutingActionConfig:
        required = {
            "create_task": ("subject",),
            "add_to_campaign": ("campaign",),
            "enroll_workflow": ("workflow_id",),
            "set_property": ("property", "value"),
        }.get(self.type, ())
        for key in required:
            if getattr(self, key) is None:
                raise ValueError(f"{self.type} needs {key!r}")
        if self.type == "assign_owner" and not (self.queue or self.round_robin):
            raise ValueError("assign_owner needs 'queue' or a non-empty 'round_robin' list")
        if self.overwrite is not None and self.type != "assign_owner":
            raise ValueError(f"'overwrite' is an option of assign_owner, not of {self.type}")
        return self

    def keeps_owner(self) -> bool:
        """An ``assign_owner`` that leaves a lead a user owns with that user (``overwrite: false``)."""
        return self.type == "assign_owner" and self.overwrite is False


class RoutingRule(_Strict):
    """Actions for a tier change: ``to`` is the new tier; ``from`` narrows it (None = any)."""

    to: str
    from_: str | None = Field(default=None, alias="from")
    actions: list[RoutingActionConfig]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("to", "from_")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        if value is not None and value not in TIERS:
            raise ValueError(f"unknown tier {value!r} (tiers are A, B, C, D)")
        return value


class ScheduleConfig(_Strict):
    sync_seconds: Annotated[int, Field(ge=10)] = 60
    writeback_seconds: Annotated[int, Field(ge=10)] = 60
    monitor_cron: str = "15 3 * * *"
    retrain_days: Annotated[int, Field(ge=1)] = 10

    @field_validator("monitor_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        check_cron(value)
        return value


class TrainingConfig(_Strict):
    horizon_days: Annotated[int, Field(ge=1, le=730)] = 90
    min_per_class: Annotated[int, Field(ge=1)] = 500
    on_insufficient: Literal["refuse", "rules"] = "refuse"
    segment_by: str | None = None  # a feature name, e.g. "seniority"
    min_segment_per_class: Annotated[int, Field(ge=1)] = 300
    selection_metric: Literal["auc", "pr_auc", "brier"] = "auc"
    promotion_tolerance: Annotated[float, Field(ge=0, le=0.2)] = 0.005
    # Retraining (`leadscore retrain`, beat): a challenger learns from the leads of the last
    # window_days before a held-out period of holdout_days, on which it meets the champion.
    window_days: Annotated[int, Field(ge=14, le=3650)] = 365
    holdout_days: Annotated[int, Field(ge=7, le=MAX_HOLDOUT_DAYS)] = 30
    alert_window_days: Annotated[int, Field(ge=14, le=3650)] = 60


class MonitoringConfig(_Strict):
    psi_warn: Annotated[float, Field(gt=0)] = 0.1
    psi_alert: Annotated[float, Field(gt=0)] = 0.25
    auc_drop_alert: Annotated[float, Field(gt=0, le=1)] = 0.05
    freshness_hours: Annotated[float, Field(gt=0)] = 6
    webhook_url: str | None = None
    # The top tier alerts when its conversion on elapsed leads falls below this share of its norm.
    top_tier_share: Annotated[float, Field(gt=0, le=1)] = 0.7
    ece_alert: Annotated[float, Field(gt=0, le=1)] = 0.05

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_http_url(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> MonitoringConfig:
        if self.psi_warn >= self.psi_alert:
            raise ValueError("psi_warn must be below psi_alert")
        return self


class AppConfig(_Strict):
    connections: list[ConnectionConfig] = Field(default_factory=list)
    tiers: TierConfig = Field(default_factory=TierConfig)
    routing: list[RoutingRule] = Field(default_factory=list)
    schedules: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        seen: set[str] = set()
        for index, conn in enumerate(self.connections):
            if conn.name in seen:
                raise ValueError(f"connections.{index}.name: duplicate connection name {conn.name!r}")
            seen.add(conn.name)
        for r_index, rule in enumerate(self.routing):
            for a_index, action in enumerate(rule.actions):
                for name in action.connections or []:
                    if name not in seen:
                        raise ValueError(
                            f"routing.{r_index}.actions.{a_index}.connections: unknown connection {name!r}"
                        )
        return self

    def connection(self, name: str) -> ConnectionConfig:
        for conn in self.connections:
            if conn.name == name:
                return conn
        known = ", ".join(c.name for c in self.connections) or "none configured"
        raise ConfigError(f"unknown connection {name!r} (known: {known})")


def _location(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"] if part not in ("function-after",)) or "(top level)"


def parse_config(data: Any, source: str) -> AppConfig:
    """Validate a parsed YAML document; ``source`` (a file name) is named in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = _unknown_key(first["loc"])
        raise ConfigError(f"{source}: {_location(first)}: {message}") from exc


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """``unknown key`` with the nearest keys the place in the file allows (a misspelt
    ``client_secert_env`` read only as pydantic's "Extra inputs are not permitted")."""
    known = _keys_at(loc[:-1])
    if known is None:
        return "unknown key"
    typed = str(loc[-1])
    close = difflib.get_close_matches(typed, known, n=1, cutoff=0.6) or [
        k for k in known if k.startswith(typed)][:1]
    if close:
        return "unknown key (did you mean " + " or ".join(repr(k) for k in close) + "?)"
    return "unknown key (allowed here: " + ", ".join(sorted(known)) + ")"


def _keys_at(path: tuple[Any, ...]) -> list[str] | None:
    """The keys the config model allows at ``path`` (list indexes skipped); None when unknown."""
    model: type[BaseModel] | None = AppConfig
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return None
    return list(model.model_fields) if model is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: str, line: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line}")
        self.key = key
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise DuplicateKeyError(str(key), key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: Path | str | None) -> AppConfig:
    """Load and validate the YAML config; ``None`` gives the defaults (no connections)."""
    if path is None:
        return AppConfig()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line}); "
                          "save the file as UTF-8") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ConfigError(f"{file}: line {exc.line}: duplicate key {exc.key!r} "
                          "(YAML would silently keep only the last one)") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        # The parser's own words ("mapping values are not allowed here"): where alone leaves the
        # reader guessing (a value with ": " in it wants quotes, say).
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{file}: not valid YAML{where}" + (f": {problem}" if problem else "")) from exc
    return parse_config(data, str(file))
