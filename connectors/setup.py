"""``leadscore crm setup``: make sure each CRM can hold what leadscore writes, and check routing.

Salesforce: ``describe`` the Lead and check the configured score fields exist, have a
usable type and are writable by the integration user. leadscore never changes a Salesforce
org's metadata: a missing field is reported with exactly what an admin must create (API name,
type, length/precision) and the setup fails.

HubSpot: list the contact properties and create the missing score properties (group
``contactinformation``; the tier as an enumeration A-D). A 409 means another run created it
first: that is success. A property that exists with the wrong type is reported.

Both: the routing configuration is validated against the CRM
(:func:`connectors.routing.validate_routing`): queues, campaigns, workflows, owners and fields
named in the config must exist. On Salesforce, routing queues must list Lead among their
supported objects (a problem), and open leads owned by inactive users are a warning when routing creates
Tasks (both are refused at run time otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simple_salesforce import format_soql

from config.app_config import AppConfig, ConnectionConfig, HubSpotFields, SalesforceFields
from connectors.errors import FatalCRMError
from connectors.hubspot.client import REQUEST_TIMEOUT
from connectors.registry import make_client, make_router, score_field_names
from connectors.routing import static_problems

TIERS = ("A", "B", "C", "D")
FEEDBACK_VALUES = ("Too high", "Too low", "About right")
PICKLIST_VALUES = {"tier": TIERS, "feedback": FEEDBACK_VALUES}


@dataclass(frozen=True)
class FieldSpec:
    """A score field as leadscore needs it: CRM name, the role it plays, type in admin terms."""

    role: str  # score | tier | reasons | model | scored_at
    name: str
    label: str
    admin_type: str  # what an admin picks in Setup, e.g. "Number(3, 0)"
    describe_types: tuple[str, ...]  # describe ``type`` values accepted
    min_length: int = 0


NUMBER_TYPES = ("double", "int", "percent", "currency")


def salesforce_specs(fields: SalesforceFields) -> list[FieldSpec]:
    """The Lead fields leadscore writes, in the terms of Salesforce Setup → Object Manager → Lead."""
    specs = [
        FieldSpec("score", fields.score, "Lead Score", "Number(3, 0)", ("double", "int", "percent", "currency")),
        FieldSpec("tier", fields.tier, "Lead Tier", "Picklist (restricted) with values A, B, C, D",
                  ("picklist",)),
        FieldSpec("reasons", fields.reasons, "Lead Score Reasons", "Text(255)", ("string", "textarea"), 255),
        FieldSpec("model", fields.model, "Lead Score Model", "Text(64)", ("string",), 64),
        FieldSpec("scored_at", fields.scored_at, "Lead Scored At", "Date/Time", ("datetime",)),
        FieldSpec("likelihood", fields.likelihood, "Lead Conversion Likelihood", "Percent(3, 1)",
                  ("percent", "double")),
        FieldSpec("fit", fields.fit, "Lead Fit Score", "Number(2, 0)", NUMBER_TYPES),
        FieldSpec("engagement", fields.engagement, "Lead Engagement Score", "Number(2, 0)", NUMBER_TYPES),
        FieldSpec("score_change", fields.score_change, "Lead Score Change", "Number(3, 0)", NUMBER_TYPES),
        FieldSpec("feedback", fields.feedback or "", "Lead Score Feedback",
                  "Picklist (restricted) with values " + ", ".join(FEEDBACK_VALUES), ("picklist",)),
        FieldSpec("feedback_comment", fields.feedback_comment or "", "Lead Score Feedback Comment", "Text(255)",
                  ("string", "textarea"), 255),
    ]
    return [spec for spec in specs if spec.name]  # feedback set to null in the config: not read


def hubspot_property_specs(fields: HubSpotFields) -> list[dict[str, Any]]:
    """The contact properties leadscore writes, as ``POST /crm/v3/properties/contacts`` bodies."""
    group = "contactinformation"
    specs: list[dict[str, Any]] = [
        {"name": fields.score, "label": "Lead score (leadscore)", "type": "number", "fieldType": "number",
         "groupName": group, "description": "1-99: the share of the model's reference leads this lead "
         "outranks (90 = better than 90 % of them). Written by leadscore."},
        {"name": fields.tier, "label": "Lead tier (leadscore)", "type": "enumeration", "fieldType": "select",
         "groupName": group, "description": "A (best) to D, from the score thresholds.",
         "options": [{"label": t, "value": t, "displayOrder": i, "hidden": False} for i, t in enumerate(TIERS)]},
        {"name": fields.reasons, "label": "Lead score reasons (leadscore)", "type": "string",
         "fieldType": "textarea", "groupName": group,
         "description": "The top reasons behind the score, in words a rep understands."},
        {"name": fields.model, "label": "Lead score model (leadscore)", "type": "string", "fieldType": "text",
         "groupName": group, "description": "The model version that produced the score."},
        {"name": fields.scored_at, "label": "Lead scored at (leadscore)", "type": "datetime", "fieldType": "date",
         "groupName": group, "description": "When the score was computed (UTC)."},
        {"name": fields.likelihood, "label": "Conversion likelihood % (leadscore)", "type": "number",
         "fieldType": "number", "groupName": group,
         "description": "Calibrated chance, in percent, that the lead converts within the model's horizon."},
        {"name": fields.fit, "label": "Fit score (leadscore)", "type": "number", "fieldType": "number",
         "groupName": group, "description": "1-99: how well who the lead is (company, role, source) fits, "
         "ranked like the score."},
        {"name": fields.engagement, "label": "Engagement score (leadscore)", "type": "number",
         "fieldType": "number", "groupName": group,
         "description": "1-99: how strongly the lead engaged (activity, recency, intent), ranked like the score."},
        {"name": fields.score_change, "label": "Score change, 7 days (leadscore)", "type": "number",
         "fieldType": "number", "groupName": group, "description": "The score now minus the score 7 days ago."},
        {"name": fields.feedback, "label": "Score feedback (leadscore)", "type": "enumeration",
         "fieldType": "select", "groupName": group,
         "description": "A rep's view of the leadscore score; evidence for its owners, not a training label.",
         "options": [{"label": v, "value": v, "displayOrder": i, "hidden": False}
                     for i, v in enumerate(FEEDBACK_VALUES)]},
        {"name": fields.feedback_comment, "label": "Score feedback comment (leadscore)", "type": "string",
         "fieldType": "textarea", "groupName": group, "description": "Why the score looks wrong (optional)."},
    ]
    return [spec for spec in specs if spec["name"]]  # feedback set to null in the config: not read


@dataclass
class SetupResult:
    """What ``crm setup`` found and did for one connection."""

    connection: str
    kind: str
    present: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    missing: list[FieldSpec] = field(default_factory=list)  # Salesforce: for an admin to add
    problems: list[str] = field(default_factory=list)  # wrong types, not writable, routing
    # Data the CRM will refuse per record at run time (not a set-up error: setup still passes).
    warnings: list[str] = field(default_factory=list)
    api_calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems

    def summary(self) -> str:
        """One line: what is ready or what blocks."""
        if self.ok:
            made = f", created {len(self.created)} properties" if self.created else ""
            return f"{self.connection} ({self.kind}): ready — {len(self.present) + len(self.created)} score " \
                   f"fields{made}"
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} custom fields missing on Lead (an admin must add them)")
        if self.problems:
            parts.append(f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}")
        return f"{self.connection} ({self.kind}): " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"connection": self.connection, "kind": self.kind, "ok": self.ok, "present": self.present,
                "created": self.created,
                "missing": [{"api_name": s.name, "label": s.label, "type": s.admin_type} for s in self.missing],
                "problems": self.problems, "warnings": self.warnings, "api_calls": self.api_calls}


def _setup_salesforce(conn: ConnectionConfig, client: Any, result: SetupResult) -> None:
    fields = score_field_names(conn)
    assert isinstance(fields, SalesforceFields)
    described = client.request(lambda sf: sf.Lead.describe())
    by_name = {str(f["name"]): f for f in described.get("fields") or []}
    for spec in salesforce_specs(fields):
        found = by_name.get(spec.name)
        if found is None:
            result.missing.append(spec)
            continue
        kind = str(found.get("type"))
        if kind not in spec.describe_types:
            result.problems.append(f"Lead.{spec.name} is a {kind} field; leadscore writes the {spec.role} "
                                   f"into it and needs {spec.admin_type}")
            continue
        if spec.min_length and int(found.get("length") or 0) < spec.min_length:
            result.problems.append(f"Lead.{spec.name} holds {found.get('length')} characters; "
                                   f"it needs {spec.admin_type}")
            continue
        if spec.role in PICKLIST_VALUES:
            values = {str(p.get("value")) for p in found.get("picklistValues") or [] if p.get("active", True)}
            lacking = [t for t in PICKLIST_VALUES[spec.role] if t not in values]
            if lacking:
                result.problems.append(f"Lead.{spec.name} picklist lacks the values {', '.join(lacking)}")
                continue
        if not found.get("updateable", True):
            result.problems.append(f"Lead.{spec.name} is not editable by the integration user "
                                   "(grant Edit in its field-level security)")
            continue
        result.present.append(spec.name)


def _salesforce_owner_checks(config: AppConfig, conn: ConnectionConfig, client: Any,
                             result: SetupResult) -> None:
    """Owners Salesforce would refuse at run time: a routing queue that does not list Lead among
    its supported objects (``FIELD_INTEGRITY_EXCEPTION``: a problem, every assignment would fail),
    and open leads owned by inactive users (``create_task`` gives the Task the lead's owner:
    ``INACTIVE_OWNER_OR_USER`` for those leads only: a warning)."""
    def query(soql: str) -> dict[str, Any]:
        return dict(client.request(lambda sf: sf.query_all(soql)))

    queues: dict[str, list[str]] = {}
    creates_tasks = False
    for r_index, rule in enumerate(config.routing):
        for a_index, action in enumerate(rule.actions):
            if action.connections is not None and conn.name not in action.connections:
                continue
            if action.type == "assign_owner" and action.queue:
                queues.setdefault(action.queue, []).append(f"routing.{r_index}.actions.{a_index}")
            creates_tasks = creates_tasks or action.type == "create_task"
    out = result.problems
    if queues:
        names = sorted(queues)
        groups = query(format_soql("SELECT Id, Name, DeveloperName FROM Group WHERE Type = 'Queue' AND "
                                   "(Name IN {names} OR DeveloperName IN {names})", names=names)).get("records") or []
        ids = {str(g["Id"]): g for g in groups}
        supported: dict[str, set[str]] = {queue_id: set() for queue_id in ids}
        if ids:
            rows = query(format_soql("SELECT QueueId, SobjectType FROM QueueSobject WHERE QueueId IN {}",
                                     sorted(ids))).get("records") or []
            for row in rows:
                supported.setdefault(str(row["QueueId"]), set()).add(str(row["SobjectType"]))
        for queue_id, group in ids.items():
            if "Lead" in supported[queue_id]:
                continue
            for name in (group.get("Name"), group.get("DeveloperName")):
                for key in queues.get(str(name), []):
                    out.append(f"{key}.queue: queue {name!r} does not list Lead among its supported objects "
                               f"(Setup → Queues → {name} → Supported Objects); Salesforce refuses to assign "
                               f"leads to it in connection {conn.name}")
    if creates_tasks:
        inactive = [str(u["Id"]) for u in query("SELECT Id FROM User WHERE IsActive = false").get("records") or []]
        if inactive:
            soql = format_soql("SELECT COUNT() FROM Lead WHERE IsConverted = false AND OwnerId IN {}", inactive)
            # query, not query_all: query_all recounts totalSize from the (empty) records of COUNT().
            owned = dict(client.request(lambda sf: sf.query(soql)))
            count = int(owned.get("totalSize") or 0)
            if count:
                result.warnings.append(f"{count} open leads are owned by inactive users in connection {conn.name}: "
                                       "create_task gives the Task the lead's owner, which Salesforce refuses "
                                       "(INACTIVE_OWNER_OR_USER) for those leads; reassign them")


def _setup_hubspot(conn: ConnectionConfig, client: Any, result: SetupResult) -> None:
    from hubspot.crm.properties import PropertyCreate

    fields = score_field_names(conn)
    assert isinstance(fields, HubSpotFields)
    listing = client.request(lambda c: c.api("properties.core").get_all(
        "contacts", _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
    existing = {str(p["name"]): p for p in listing.get("results") or []}
    for spec in hubspot_property_specs(fields):
        found = existing.get(spec["name"])
        if found is not None:
            if found.get("type") != spec["type"]:
                result.problems.append(f"contact property {spec['name']} is of type {found.get('type')}; "
                                       f"leadscore needs {spec['type']}")
            elif spec["type"] == "enumeration":
                values = {str(o.get("value")) for o in found.get("options") or []}
                lacking = [str(o["value"]) for o in spec["options"] if str(o["value"]) not in values]
                if lacking:
                    result.problems.append(f"contact property {spec['name']} lacks the options {', '.join(lacking)}")
                else:
                    result.present.append(spec["name"])
            else:
                result.present.append(spec["name"])
            continue
        body = PropertyCreate(**{_snake(k): v for k, v in spec.items()})
        try:
            client.request(lambda c, b=body: c.api("properties.core").create(
                "contacts", b, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
        except FatalCRMError as exc:
            if exc.status != 409:
                raise
            result.present.append(spec["name"])  # created meanwhile by another run: fine
            continue
        result.created.append(spec["name"])


def _snake(key: str) -> str:
    return {"fieldType": "field_type", "groupName": "group_name", "displayOrder": "display_order"}.get(key, key)


def crm_setup(
    config: AppConfig,
    secrets_by_connection: Mapping[str, Any],
    *,
    connection: str | None = None,
    clients: Mapping[str, Any] | None = None,
) -> list[SetupResult]:
    """Check (Salesforce) or create (HubSpot) the score fields and validate routing, per connection.

    Returns one :class:`SetupResult` per enabled connection (or only ``connection``); a result
    with ``ok`` False lists what an admin must do. CRM errors (auth, unreachable) propagate as
    :mod:`connectors.errors` types.
    """
    targets = [config.connection(connection)] if connection else [c for c in config.connections if c.enabled]
    results: list[SetupResult] = []
    static = static_problems(config)
    for conn in targets:
        client = (clients or {}).get(conn.name) or make_client(conn, secrets_by_connection[conn.name])
        before = int(getattr(client, "api_calls", 0))
        result = SetupResult(connection=conn.name, kind=conn.kind)
        if conn.kind == "salesforce":
            _setup_salesforce(conn, client, result)
        else:
            _setup_hubspot(conn, client, result)
        result.problems.extend(static + make_router(conn, client).problems(config, conn))
        if conn.kind == "salesforce":
            _salesforce_owner_checks(config, conn, client, result)
        result.api_calls = int(getattr(client, "api_calls", 0)) - before
        results.append(result)
    return results


def admin_instructions(result: SetupResult) -> list[str]:
    """Lines telling an admin exactly what to create (Salesforce) and what else is wrong."""
    lines: list[str] = []
    if result.missing:
        lines.append(f"Salesforce connection {result.connection}: create these custom fields on Lead "
                     "(Setup → Object Manager → Lead → Fields & Relationships → New), make them editable "
                     "by the integration user:")
        for spec in result.missing:
            lines.append(f"  {spec.name:<28} {spec.admin_type:<45} label \"{spec.label}\"")
    for problem in result.problems:
        lines.append(f"{result.connection}: {problem}")
    for warning in result.warnings:
        lines.append(f"{result.connection}: warning: {warning}")
    return lines
