"""``crm setup`` on Salesforce: the Lead score fields an admin creates, and what the org would refuse.

``describe`` the Lead (and the Account, for the two account fields) and check the configured
score fields exist, have a usable type and are writable by the integration user; leadscore never
changes a Salesforce org's metadata: a missing field is reported with exactly what an admin must
create (object, API name, type, length/precision) and the setup fails. Routing queues must list
Lead among their supported objects (a problem), and open leads owned by inactive users are a
warning when routing creates Tasks (both are refused at run time otherwise). The runner is
:mod:`connectors.setup`.
"""

from __future__ import annotations

from typing import Any

from simple_salesforce import format_soql

from config.app_config import AppConfig, ConnectionConfig, SalesforceFields
from connectors.protocols import FieldSpec, SetupResult, fields_as
from scoring.feedback import TIERS
from scoring.feedback import VALUES as FEEDBACK_VALUES

PICKLIST_VALUES = {"tier": TIERS, "feedback": FEEDBACK_VALUES}


NUMBER_TYPES = ("double", "int", "percent", "currency")


def salesforce_specs(fields: SalesforceFields) -> list[FieldSpec]:
    """The Lead (and Account) fields leadscore writes, in the terms of Salesforce Setup → Object Manager."""
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
        FieldSpec("account_score", fields.account_score, "Account Lead Score", "Number(2, 0)", NUMBER_TYPES,
                  sobject="Account"),
        FieldSpec("account_engaged_people", fields.account_engaged_people, "Account Engaged People",
                  "Number(5, 0)", NUMBER_TYPES, sobject="Account"),
    ]
    return [spec for spec in specs if spec.name]  # feedback set to null in the config: not read


class SalesforceSetup:
    """``crm setup`` on Salesforce: describe the Lead and check the score fields; leadscore never
    changes an org's metadata (a missing field is reported for an admin to create)."""

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self.client = client
        self.conn = conn

    def check_fields(self, result: SetupResult, *, create: bool = True) -> None:
        """``create`` changes nothing here: leadscore never creates Salesforce fields."""
        _check_fields(self.conn, self.client, result)

    def check_routing(self, config: AppConfig, result: SetupResult) -> None:
        _owner_checks(config, self.conn, self.client, result)


def _check_fields(conn: ConnectionConfig, client: Any, result: SetupResult) -> None:
    specs = salesforce_specs(fields_as(conn, SalesforceFields))
    described: dict[str, dict[str, Any]] = {}
    for sobject in sorted({spec.sobject for spec in specs}):
        answer = client.request(lambda sf, name=sobject: getattr(sf, name).describe())
        described[sobject] = {str(f["name"]): f for f in answer.get("fields") or []}
    for spec in specs:
        where = f"{spec.sobject}.{spec.name}"
        found = described[spec.sobject].get(spec.name)
        if found is None:
            result.missing.append(spec)
            continue
        kind = str(found.get("type"))
        if kind not in spec.describe_types:
            result.problems.append(f"{where} is a {kind} field; leadscore writes the {spec.role} "
                                   f"into it and needs {spec.admin_type}")
            continue
        if spec.min_length and int(found.get("length") or 0) < spec.min_length:
            result.problems.append(f"{where} holds {found.get('length')} characters; "
                                   f"it needs {spec.admin_type}")
            continue
        if spec.role in PICKLIST_VALUES:
            values = {str(p.get("value")) for p in found.get("picklistValues") or [] if p.get("active", True)}
            lacking = [t for t in PICKLIST_VALUES[spec.role] if t not in values]
            if lacking:
                result.problems.append(f"{where} picklist lacks the values {', '.join(lacking)}")
                continue
        if not found.get("updateable", True):
            result.problems.append(f"{where} is not editable by the integration user "
                                   "(grant Edit in its field-level security)")
            continue
        result.present.append(spec.name)


def _owner_checks(config: AppConfig, conn: ConnectionConfig, client: Any, result: SetupResult) -> None:
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
