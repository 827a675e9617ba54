"""Routing and nurture actions on tier changes: planned in the scoring transaction, run once.

Planning (:func:`plan_routing`) is the ``tier_change_hook`` of ``scoring.service.score_leads``:
for a lead whose tier changed, it inserts one ``RoutingAction`` (status ``pending``) per
configured action of every matching rule (``routing[i].to`` is the new tier, ``from`` narrows
it). The unique key (lead, score that caused it, action) makes a re-run harmless.

Execution (:func:`execute_routing`) runs each action exactly once per lead and tier change,
however often it is called and wherever it is interrupted:

1. the action is marked ``sending`` (attempts+1) and committed BEFORE the CRM call;
2. the CRM call is made; its reference (Task id, CampaignMember id, owner id) is stored with
   status ``done`` right after the response;
3. an action found ``sending`` (a crash or a timeout between 1 and 2) is first looked up in the
   CRM: a Task whose subject carries ``[leadscore #<action id>]``, an existing CampaignMember,
   the owner or property already set. Only when no effect is found is it sent again.

Actions of a tier change that was overtaken (the lead's current tier is no longer the action's
``to`` tier) are marked ``superseded`` instead of being run.

``pause_outreach`` (the lowest tier): Salesforce ``Status = 'Nurturing'``; HubSpot
``hs_lead_status = 'BAD_TIMING'`` ("not now": reps stop working the lead, marketing nurtures it).
Both can be overridden with the action's ``property``/``value``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from config.app_config import AppConfig, ConnectionConfig, RoutingActionConfig
from config.errors import ConfigError
from connectors.errors import AuthError, CRMError, FatalCRMError, QuotaExhaustedError, RetriableCRMError
from connectors.hubspot.client import REQUEST_TIMEOUT
from connectors.lifecycle import CANCELLED, not_open_reason
from scoring.hooks import TierChangeHook
from store.db import unit_of_work
from store.models import Connection, Lead, LeadLifecycle, LeadScore, RoutingAction
from store.upsert import upsert_rows

logger = logging.getLogger(__name__)

# Which CRM can run which action (HubSpot has no campaigns API for contacts; Salesforce no workflows).
SUPPORTED: dict[str, frozenset[str]] = {
    "salesforce": frozenset({"assign_owner", "create_task", "add_to_campaign", "set_property", "pause_outreach"}),
    "hubspot": frozenset({"assign_owner", "create_task", "enroll_workflow", "set_property", "pause_outreach"}),
}
PAUSE_DEFAULTS: dict[str, tuple[str, str]] = {
    "salesforce": ("Status", "Nurturing"),
    "hubspot": ("hs_lead_status", "BAD_TIMING"),
}
MAX_ATTEMPTS = 8


def action_marker(action_id: int) -> str:
    """The tag a created record carries so a retry can find it: ``[leadscore #123]``."""
    return f"[leadscore #{action_id}]"


def round_robin_pick(owners: list[str], crm_id: str) -> str:
    """The owner for a lead among ``owners``: deterministic per lead, spread evenly."""
    digest = hashlib.sha256(crm_id.encode("utf-8")).digest()
    return owners[int.from_bytes(digest[:8], "big") % len(owners)]


def _applies(action: RoutingActionConfig, conn: ConnectionConfig) -> bool:
    if action.connections is not None and conn.name not in action.connections:
        return False
    return action.type in SUPPORTED.get(conn.kind, frozenset())


# ------------------------------------------------------------------------------------ planning


def actions_for_change(config: AppConfig, conn: ConnectionConfig, from_tier: str | None, to_tier: str) -> list[str]:
    """The action types a tier change ``from_tier -> to_tier`` of a lead of ``conn`` plans, in
    rule order (what :func:`plan_routing` inserts; ``tiers preview`` counts them)."""
    if from_tier == to_tier or not conn.enabled:
        return []
    return [action.type for rule in config.routing
            if rule.to == to_tier and (rule.from_ is None or rule.from_ == from_tier)
            for action in rule.actions if _applies(action, conn)]


def plan_routing(config: AppConfig) -> TierChangeHook:
    """The ``tier_change_hook`` for scoring: insert the configured actions of a tier change.

    Runs inside the scoring transaction (no commit here). An action already planned for the same
    (lead, score, action) is not inserted twice.
    """
    rules = list(enumerate(config.routing))
    conns_by_name = {c.name: c for c in config.connections}
    names_by_id: dict[int, str | None] = {}

    def hook(session: Session, lead: Lead, previous: LeadScore | None, current: LeadScore) -> None:
        from_tier = previous.tier if previous is not None else None
        to_tier = current.tier
        if from_tier == to_tier or lead.lifecycle != LeadLifecycle.open:
            return
        if lead.connection_id not in names_by_id:
            names_by_id[lead.connection_id] = session.scalar(
                select(Connection.name).where(Connection.id == lead.connection_id))
        name = names_by_id[lead.connection_id]
        conn = conns_by_name.get(name) if name else None
        if conn is None or not conn.enabled:
            return
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for r_index, rule in rules:
            if rule.to != to_tier or (rule.from_ is not None and rule.from_ != from_tier):
                continue
            for a_index, action in enumerate(rule.actions):
                if not _applies(action, conn):
                    continue
                n = seen.get(action.type, 0)
                seen[action.type] = n + 1
                params = action.model_dump(exclude_none=True)
                params.update({"rule": r_index, "index": a_index,
                               "config_key": f"routing.{r_index}.actions.{a_index}"})
                rows.append({
                    "lead_id": lead.id, "lead_score_id": current.id, "connection_id": lead.connection_id,
                    "from_tier": from_tier, "to_tier": to_tier,
                    "action": action.type if n == 0 else f"{action.type}#{n + 1}",
                    "params": params, "status": "pending", "attempts": 0,
                })
        # INSERT ... ON CONFLICT DO NOTHING on (lead, score, action): a re-run plans nothing twice.
        upsert_rows(session, RoutingAction, rows, conflict_columns=("lead_id", "lead_score_id", "action"),
                    update_columns=())

    return hook


# ------------------------------------------------------------------------------------ routers


@dataclass
class LeadRef:
    """What an action needs to know about its lead."""

    crm_id: str
    email: str | None
    owner_crm_id: str | None


class Router(Protocol):
    """One CRM's implementation of the routing actions."""

    def problems(self, config: AppConfig, conn: ConnectionConfig) -> list[str]:
        """Every routing setting naming something missing in this CRM (``routing.i.actions.j.key: ...``)."""
        ...

    def find_existing(self, action: RoutingAction, lead: LeadRef) -> str | None:
        """The CRM reference of the action's effect if it already happened, else None."""
        ...

    def perform(self, action: RoutingAction, lead: LeadRef) -> str:
        """Run the action; returns the CRM's reference (created id, owner id, ...)."""
        ...


def make_router(conn: ConnectionConfig, client: Any) -> Router:
    """The router for ``conn.kind`` around the connectors' client."""
    if conn.kind == "salesforce":
        return SalesforceRouter(client, conn)
    if conn.kind == "hubspot":
        return HubSpotRouter(client, conn)
    raise ConfigError(f"connection {conn.name!r}: unknown kind {conn.kind!r}")


def _actions_for(config: AppConfig, conn: ConnectionConfig) -> list[tuple[str, RoutingActionConfig]]:
    out = []
    for r_index, rule in enumerate(config.routing):
        for a_index, action in enumerate(rule.actions):
            if _applies(action, conn):
                out.append((f"routing.{r_index}.actions.{a_index}", action))
    return out


def _soql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _task_subject(action: RoutingAction) -> str:
    subject = str(action.params.get("subject") or "Follow up")
    marker = action_marker(action.id)
    return f"{subject[:255 - len(marker) - 1]} {marker}"


def _due(action: RoutingAction, now: datetime) -> datetime:
    return now + timedelta(hours=float(action.params.get("due_hours", 24)))


class SalesforceRouter:
    """Routing on Salesforce Leads: OwnerId (queue or user), Task, CampaignMember, field updates."""

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self.client = client
        self.conn = conn
        self._queues: dict[str, str] | None = None
        self._campaigns: dict[str, str] | None = None
        self._users: dict[str, str] | None = None
        self._lead_fields: dict[str, dict[str, Any]] | None = None

    # -- lookups (cached per router: one execute_routing run)
    def _query(self, soql: str) -> list[dict[str, Any]]:
        result = self.client.request(lambda sf: sf.query_all(soql))
        return list(result.get("records") or [])

    def queues(self) -> dict[str, str]:
        if self._queues is None:
            rows = self._query("SELECT Id, Name, DeveloperName FROM Group WHERE Type = 'Queue'")
            self._queues = {}
            for row in rows:
                for key in (row.get("Name"), row.get("DeveloperName")):
                    if key:
                        self._queues.setdefault(str(key), str(row["Id"]))
        return self._queues

    def campaigns(self) -> dict[str, str]:
        if self._campaigns is None:
            rows = self._query("SELECT Id, Name FROM Campaign")
            self._campaigns = {str(r["Name"]): str(r["Id"]) for r in rows if r.get("Name")}
            self._campaigns.update({str(r["Id"]): str(r["Id"]) for r in rows})
        return self._campaigns

    def users(self) -> dict[str, str]:
        if self._users is None:
            rows = self._query("SELECT Id, Username, Email FROM User WHERE IsActive = true")
            self._users = {}
            for row in rows:
                for key in (row.get("Id"), row.get("Username"), row.get("Email")):
                    if key:
                        self._users.setdefault(str(key).lower() if "@" in str(key) else str(key), str(row["Id"]))
        return self._users

    def lead_fields(self) -> dict[str, dict[str, Any]]:
        if self._lead_fields is None:
            described = self.client.request(lambda sf: sf.Lead.describe())
            self._lead_fields = {str(f["name"]): dict(f) for f in described.get("fields") or []}
        return self._lead_fields

    def _user(self, key: str) -> str | None:
        return self.users().get(key.lower() if "@" in key else key)

    def problems(self, config: AppConfig, conn: ConnectionConfig) -> list[str]:
        out: list[str] = []
        for key, action in _actions_for(config, conn):
            if action.type == "assign_owner":
                if action.queue and action.queue not in self.queues():
                    out.append(f"{key}.queue: no queue named {action.queue!r} in connection {conn.name}")
                for i, owner in enumerate(action.round_robin or []):
                    if self._user(owner) is None:
                        out.append(f"{key}.round_robin.{i}: no active user {owner!r} in connection {conn.name}")
            elif action.type == "add_to_campaign":
                if action.campaign and action.campaign not in self.campaigns():
                    out.append(f"{key}.campaign: no campaign named {action.campaign!r} in connection {conn.name}")
            elif action.type in ("set_property", "pause_outreach"):
                name, value = self._property(action)
                problem = self._field_problem(name, value)
                if problem:
                    label = "property" if action.property else "pause_outreach"
                    out.append(f"{key}.{label}: {problem} in connection {conn.name}")
        return out

    def _property(self, action_or_params: RoutingActionConfig | Mapping[str, Any]) -> tuple[str, str]:
        get = (action_or_params.get if isinstance(action_or_params, Mapping)
               else lambda k: getattr(action_or_params, k))
        kind = get("type")
        prop, value = get("property"), get("value")
        if kind == "pause_outreach" and (prop is None or value is None):
            return PAUSE_DEFAULTS["salesforce"]
        return str(prop), str(value)

    def _field_problem(self, name: str, value: str) -> str | None:
        fdef = self.lead_fields().get(name)
        if fdef is None:
            return f"Lead has no field {name!r}"
        if not fdef.get("updateable", True):
            return f"Lead field {name!r} is read-only"
        values = [p.get("value") for p in fdef.get("picklistValues") or [] if p.get("active", True)]
        if fdef.get("type") == "picklist" and values and value not in values:
            return f"{value!r} is not a value of the picklist Lead.{name} ({', '.join(map(str, values))})"
        return None

    def _typed(self, name: str, value: str) -> Any:
        kind = self.lead_fields().get(name, {}).get("type")
        if kind == "boolean":
            return value.strip().lower() in ("true", "1", "yes")
        if kind in ("double", "currency", "percent"):
            return float(value)
        if kind == "int":
            return int(value)
        return value

    def _update_lead(self, lead: LeadRef, values: dict[str, Any]) -> None:
        self.client.request(lambda sf: sf.restful(f"sobjects/Lead/{lead.crm_id}", method="PATCH", json=values,
                                                  headers={"Sforce-Auto-Assign": "FALSE"}))

    def _owner_for(self, action: RoutingAction, lead: LeadRef) -> str:
        queue = action.params.get("queue")
        if queue:
            found = self.queues().get(str(queue))
            if found is None:
                raise FatalCRMError(f"no queue named {queue!r}", code="UNKNOWN_QUEUE")
            return found
        owners = [str(o) for o in action.params.get("round_robin") or []]
        pick = round_robin_pick(owners, lead.crm_id)
        found = self._user(pick)
        if found is None:
            raise FatalCRMError(f"no active user {pick!r}", code="UNKNOWN_USER")
        return found

    def find_existing(self, action: RoutingAction, lead: LeadRef) -> str | None:
        kind = str(action.params.get("type"))
        if kind == "create_task":
            rows = self._query(
                f"SELECT Id FROM Task WHERE WhoId = {_soql_string(lead.crm_id)} "
                f"AND Subject = {_soql_string(_task_subject(action))}")
            return str(rows[0]["Id"]) if rows else None
        if kind == "add_to_campaign":
            return self._member(action, lead)
        # Field updates are idempotent: setting the same value again changes nothing.
        return None

    def _member(self, action: RoutingAction, lead: LeadRef) -> str | None:
        campaign_id = self.campaigns().get(str(action.params.get("campaign")))
        if campaign_id is None:
            return None
        rows = self._query(
            f"SELECT Id FROM CampaignMember WHERE CampaignId = {_soql_string(campaign_id)} "
            f"AND LeadId = {_soql_string(lead.crm_id)}")
        return str(rows[0]["Id"]) if rows else None

    def perform(self, action: RoutingAction, lead: LeadRef) -> str:
        kind = str(action.params.get("type"))
        if kind == "assign_owner":
            owner = self._owner_for(action, lead)
            self._update_lead(lead, {"OwnerId": owner})
            return owner
        if kind == "create_task":
            body: dict[str, Any] = {
                "WhoId": lead.crm_id,
                "Subject": _task_subject(action),
                "Priority": str(action.params.get("priority") or "High"),
                "Status": "Not Started",
                "ActivityDate": _due(action, datetime.now(UTC)).date().isoformat(),
                "Description": f"leadscore: tier {action.from_tier or '-'} -> {action.to_tier} "
                               f"(routing action {action.id}, {action.params.get('config_key')})",
            }
            if lead.owner_crm_id and lead.owner_crm_id.startswith("005"):
                body["OwnerId"] = lead.owner_crm_id
            created = self.client.request(lambda sf: sf.restful("sobjects/Task/", method="POST", json=body))
            return str(created["id"])
        if kind == "add_to_campaign":
            campaign = str(action.params.get("campaign"))
            campaign_id = self.campaigns().get(campaign)
            if campaign_id is None:
                raise FatalCRMError(f"no campaign named {campaign!r}", code="UNKNOWN_CAMPAIGN")
            member = {"CampaignId": campaign_id, "LeadId": lead.crm_id, "Status": "Sent"}
            try:
                created = self.client.request(
                    lambda sf: sf.restful("sobjects/CampaignMember/", method="POST", json=member))
            except FatalCRMError as exc:
                if exc.code != "DUPLICATE_VALUE":
                    raise
                # Already a member (added by hand, or by us before a crash): the goal is reached.
                return self._member(action, lead) or f"member:{campaign_id}"
            return str(created["id"])
        if kind in ("set_property", "pause_outreach"):
            name, value = self._property(action.params)
            self._update_lead(lead, {name: self._typed(name, value)})
            return f"{name}={value}"
        raise FatalCRMError(f"action {kind!r} is not supported on Salesforce", code="UNSUPPORTED_ACTION")


class _RawResponse:
    """What ``HubSpotClient.request`` reads from a response: ``headers`` and ``data``."""

    def __init__(self, headers: Any, data: bytes) -> None:
        self.headers = headers
        self.data = data


def hubspot_raw(client: Any, method: str, path: str, qs: dict[str, Any] | None = None) -> _RawResponse:
    """One call without a generated wrapper (``client.api_request``), shaped for ``client.request``.

    ``api_request`` never raises on HTTP errors: an error status is raised as the objects API's
    ``ApiException`` so the connectors' one error mapping and call accounting apply to it.
    """
    import requests
    from hubspot.crm.objects.exceptions import ApiException

    options: dict[str, Any] = {"method": method, "path": path}
    if qs:
        options["qs"] = qs
    try:
        response = client.client.api_request(options)
    except requests.RequestException as exc:
        raise RetriableCRMError(f"HubSpot connection failed: {exc.__class__.__name__}") from exc
    if response.status_code >= 300:
        error = ApiException(status=response.status_code, reason=response.reason)
        error.body = response.content
        error.headers = response.headers
        raise error
    return _RawResponse(response.headers, response.content)


class HubSpotRouter:
    """Routing on HubSpot contacts: owner, task engagement, v2 workflow enrollment, properties."""

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self.client = client
        self.conn = conn
        self._owners: list[dict[str, Any]] | None = None
        self._workflows: dict[str, dict[str, Any]] | None = None
        self._properties: dict[str, dict[str, Any]] | None = None

    def owners(self) -> list[dict[str, Any]]:
        if self._owners is None:
            owners: list[dict[str, Any]] = []
            after: str | None = None
            while True:
                qs: dict[str, Any] = {"limit": 100}
                if after:
                    qs["after"] = after
                body = self.client.request(lambda c, q=qs: hubspot_raw(c, "GET", "/crm/v3/owners/", q))
                owners.extend(body.get("results") or [])
                nxt = ((body.get("paging") or {}).get("next") or {}).get("after")
                if not nxt:
                    break
                after = str(nxt)
            self._owners = owners
        return self._owners

    def workflows(self) -> dict[str, dict[str, Any]]:
        if self._workflows is None:
            body = self.client.request(lambda c: hubspot_raw(c, "GET", "/automation/v2/workflows"))
            self._workflows = {str(w.get("id")): w for w in body.get("workflows") or []}
        return self._workflows

    def properties(self) -> dict[str, dict[str, Any]]:
        if self._properties is None:
            body = self.client.request(lambda c: c.api("properties.core").get_all(
                "contacts", _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
            self._properties = {str(p["name"]): p for p in body.get("results") or []}
        return self._properties

    def _owner_id(self, key: str) -> str | None:
        wanted = key.strip().lower()
        for owner in self.owners():
            full = f"{owner.get('first_name') or owner.get('firstName') or ''} " \
                   f"{owner.get('last_name') or owner.get('lastName') or ''}".strip().lower()
            if wanted in (str(owner.get("id")), str(owner.get("email") or "").lower(), full):
                return str(owner.get("id"))
        return None

    def _team_owners(self, team: str) -> list[str]:
        return [str(o.get("id")) for o in self.owners()
                if any(str(t.get("name") if isinstance(t, dict) else getattr(t, "name", "")) == team
                       for t in o.get("teams") or [])]

    def _property(self, params: Mapping[str, Any] | RoutingActionConfig) -> tuple[str, str]:
        get = params.get if isinstance(params, Mapping) else (lambda k: getattr(params, k))
        prop, value = get("property"), get("value")
        if get("type") == "pause_outreach" and (prop is None or value is None):
            return PAUSE_DEFAULTS["hubspot"]
        return str(prop), str(value)

    def _property_problem(self, name: str, value: str) -> str | None:
        pdef = self.properties().get(name)
        if pdef is None:
            return f"contacts have no property {name!r}"
        meta = pdef.get("modification_metadata") or pdef.get("modificationMetadata") or {}
        if meta.get("read_only_value") or meta.get("readOnlyValue"):
            return f"contact property {name!r} is read-only"
        options = [o.get("value") for o in pdef.get("options") or []]
        if pdef.get("type") == "enumeration" and options and name != "hubspot_owner_id" and value not in options:
            return f"{value!r} is not an option of the contact property {name} ({', '.join(map(str, options))})"
        return None

    def problems(self, config: AppConfig, conn: ConnectionConfig) -> list[str]:
        out: list[str] = []
        for key, action in _actions_for(config, conn):
            if action.type == "assign_owner":
                if action.queue and self._owner_id(action.queue) is None and not self._team_owners(action.queue):
                    out.append(f"{key}.queue: no owner or team named {action.queue!r} in connection {conn.name} "
                               "(HubSpot has no queues: name an owner's email or a team)")
                for i, owner in enumerate(action.round_robin or []):
                    if self._owner_id(owner) is None:
                        out.append(f"{key}.round_robin.{i}: no owner {owner!r} in connection {conn.name}")
            elif action.type == "enroll_workflow":
                if str(action.workflow_id) not in self.workflows():
                    out.append(f"{key}.workflow_id: no workflow {action.workflow_id!r} in connection {conn.name}")
            elif action.type in ("set_property", "pause_outreach"):
                name, value = self._property(action)
                problem = self._property_problem(name, value)
                if problem:
                    label = "property" if action.property else "pause_outreach"
                    out.append(f"{key}.{label}: {problem} in connection {conn.name}")
        return out

    def _update_contact(self, lead: LeadRef, props: dict[str, str]) -> None:
        from hubspot.crm.objects import SimplePublicObjectInput

        body = SimplePublicObjectInput(properties=props)
        self.client.request(lambda c: c.api("objects.basic").update(
            "contacts", lead.crm_id, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))

    def _owner_for(self, action: RoutingAction, lead: LeadRef) -> str:
        queue = action.params.get("queue")
        if queue:
            found = self._owner_id(str(queue))
            if found is not None:
                return found
            team = self._team_owners(str(queue))
            if not team:
                raise FatalCRMError(f"no owner or team named {queue!r}", code="UNKNOWN_QUEUE")
            return round_robin_pick(team, lead.crm_id)
        owners = [str(o) for o in action.params.get("round_robin") or []]
        pick = round_robin_pick(owners, lead.crm_id)
        found = self._owner_id(pick)
        if found is None:
            raise FatalCRMError(f"no owner {pick!r}", code="UNKNOWN_OWNER")
        return found

    def find_existing(self, action: RoutingAction, lead: LeadRef) -> str | None:
        if str(action.params.get("type")) != "create_task":
            # Property writes are idempotent; a v2 enrollment of an enrolled contact is ignored by
            # HubSpot unless the workflow allows re-enrollment (no read API to check it).
            return None
        from hubspot.crm.objects import BatchReadInputSimplePublicObjectId

        # Associations are read-your-writes (search is only eventually consistent).
        path = f"/crm/v4/objects/contacts/{lead.crm_id}/associations/tasks"
        body = self.client.request(lambda c: hubspot_raw(c, "GET", path, {"limit": 500}))
        task_ids = [str(r.get("toObjectId")) for r in body.get("results") or []]
        subject = _task_subject(action)
        for start in range(0, len(task_ids), 100):
            request = BatchReadInputSimplePublicObjectId(
                inputs=[{"id": t} for t in task_ids[start:start + 100]], properties=["hs_task_subject"])
            read = self.client.request(lambda c, r=request: c.api("objects.batch").read(
                "tasks", r, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
            for task in read.get("results") or []:
                if (task.get("properties") or {}).get("hs_task_subject") == subject:
                    return str(task.get("id"))
        return None

    def perform(self, action: RoutingAction, lead: LeadRef) -> str:
        kind = str(action.params.get("type"))
        if kind == "assign_owner":
            owner = self._owner_for(action, lead)
            self._update_contact(lead, {"hubspot_owner_id": owner})
            return owner
        if kind == "create_task":
            from hubspot.crm.objects import SimplePublicObjectInputForCreate

            due = _due(action, datetime.now(UTC))
            priority = {"high": "HIGH", "normal": "MEDIUM", "medium": "MEDIUM", "low": "LOW"}.get(
                str(action.params.get("priority") or "High").lower(), "HIGH")
            props = {
                "hs_task_subject": _task_subject(action),
                "hs_task_body": f"leadscore: tier {action.from_tier or '-'} -> {action.to_tier} "
                                f"(routing action {action.id}, {action.params.get('config_key')})",
                "hs_task_status": "NOT_STARTED",
                "hs_task_priority": priority,
                "hs_task_type": "TODO",
                "hs_timestamp": due.strftime("%Y-%m-%dT%H:%M:%S.") + f"{due.microsecond // 1000:03d}Z",
            }
            if lead.owner_crm_id and lead.owner_crm_id.isdigit():
                props["hubspot_owner_id"] = lead.owner_crm_id
            body = SimplePublicObjectInputForCreate(properties=props, associations=[{
                "to": {"id": lead.crm_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
            }])
            created = self.client.request(lambda c: c.api("objects.basic").create(
                "tasks", body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))
            return str(created["id"])
        if kind == "enroll_workflow":
            if not lead.email:
                raise FatalCRMError("the contact has no email: v2 workflow enrollment is by email",
                                    code="NO_EMAIL")
            workflow = str(action.params.get("workflow_id"))
            path = f"/automation/v2/workflows/{quote(workflow, safe='')}/enrollments/contacts/" \
                   f"{quote(lead.email, safe='@')}"
            self.client.request(lambda c: hubspot_raw(c, "POST", path))
            return f"workflow:{workflow}"
        if kind in ("set_property", "pause_outreach"):
            name, value = self._property(action.params)
            self._update_contact(lead, {name: value})
            return f"{name}={value}"
        raise FatalCRMError(f"action {kind!r} is not supported on HubSpot", code="UNSUPPORTED_ACTION")


# ------------------------------------------------------------------------------------ validation


def static_problems(config: AppConfig) -> list[str]:
    """Routing settings wrong without asking any CRM: an action no configured connection can run."""
    out: list[str] = []
    conns = {c.name: c for c in config.connections}
    for r_index, rule in enumerate(config.routing):
        for a_index, action in enumerate(rule.actions):
            key = f"routing.{r_index}.actions.{a_index}"
            named = action.connections
            for name in named or []:
                conn = conns.get(name)
                if conn is not None and action.type not in SUPPORTED[conn.kind]:
                    out.append(f"{key}.connections: {action.type} cannot run on {conn.kind} connection {name!r}")
            if named is None and config.connections and not any(
                    action.type in SUPPORTED[c.kind] for c in config.connections):
                kinds = sorted(k for k, types in SUPPORTED.items() if action.type in types)
                out.append(f"{key}.type: {action.type} needs a {' or '.join(kinds)} connection")
    return out


def routing_problems(config: AppConfig, clients: Mapping[str, Any]) -> list[str]:
    """Every routing problem: static ones, then those each given connection's CRM reveals."""
    out = static_problems(config)
    for conn in config.connections:
        client = clients.get(conn.name)
        if client is None or not conn.enabled:
            continue
        out.extend(make_router(conn, client).problems(config, conn))
    return out


def validate_routing(config: AppConfig, clients: Mapping[str, Any]) -> None:
    """Refuse routing settings that name a queue, campaign, workflow, owner or field the CRM lacks.

    ``clients`` are the connectors' clients by connection name (connections without a client
    are only checked statically). Raises :class:`ConfigError` naming the config key, e.g.
    ``routing.0.actions.1.queue: no queue named 'X' in connection sf``.
    """
    problems = routing_problems(config, clients)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


# ------------------------------------------------------------------------------------ execution


@dataclass
class RoutingReport:
    """What one execute_routing run did."""

    done: dict[str, int] = field(default_factory=dict)  # by action type
    recovered: int = 0  # found already done in the CRM after an interruption
    failed: dict[str, int] = field(default_factory=dict)  # by reason
    superseded: int = 0
    cancelled: int = 0  # the lead was no longer open (converted, closed, deleted, merged)
    retry_later: int = 0
    errors: list[str] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)  # by connection

    def summary(self) -> dict[str, int]:
        """The demo's routing counts: assigned, nurtured (campaign/workflow), paused."""
        return {
            "assigned": self.done.get("assign_owner", 0),
            "nurtured": self.done.get("add_to_campaign", 0) + self.done.get("enroll_workflow", 0),
            "paused": self.done.get("pause_outreach", 0),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"done": dict(sorted(self.done.items())), "recovered": self.recovered,
                "failed": dict(sorted(self.failed.items())), "superseded": self.superseded,
                "cancelled": self.cancelled,
                "retry_later": self.retry_later, "errors": list(self.errors),
                "api_calls": dict(self.api_calls), **self.summary()}


def execute_routing(
    engine: Engine,
    config: AppConfig,
    secrets_by_connection: Mapping[str, Any],
    *,
    limit: int | None = None,
    clients: Mapping[str, Any] | None = None,
) -> RoutingReport:
    """Run pending routing actions (and recover interrupted ones), each exactly once.

    Validates the routing config against every CRM that has work first (:func:`validate_routing`;
    a :class:`ConfigError` means nothing was run). ``clients`` may give already-built clients by
    connection name. A connection whose CRM refuses calls (auth, quota, still failing after
    retries) is stopped with its error in the report; its actions are retried next run.
    """
    report = RoutingReport()
    conns = {c.name: c for c in config.connections if c.enabled}
    static = static_problems(config)
    if static:
        raise ConfigError(static[0])
    with unit_of_work(engine) as session:
        query = (select(RoutingAction.id, RoutingAction.connection_id)
                 .where(RoutingAction.status.in_(("pending", "sending"))).order_by(RoutingAction.id))
        if limit is not None:
            query = query.limit(limit)
        todo = list(session.execute(query).all())
        conn_names: dict[int, str] = {cid: cname for cid, cname in session.execute(
            select(Connection.id, Connection.name)).all()}
    if not todo:
        return report
    by_conn: dict[int, list[int]] = {}
    for action_id, conn_id in todo:
        by_conn.setdefault(conn_id, []).append(action_id)
    active: dict[str, Any] = {}
    for conn_id in by_conn:
        name = conn_names.get(conn_id)
        if name not in conns:
            continue
        client = (clients or {}).get(name)
        if client is None:
            secrets = secrets_by_connection.get(name)
            if secrets is None:
                raise ConfigError(f"connection {name!r}: no credentials given for routing")
            from connectors.writeback import make_client

            client = make_client(conns[name], secrets)
        active[name] = client
    routers: dict[str, Router] = {}
    for name, client in active.items():
        router = make_router(conns[name], client)
        problems = router.problems(config, conns[name])
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ConfigError(problems[0] + more)
        routers[name] = router
    for conn_id, action_ids in by_conn.items():
        name = conn_names.get(conn_id)
        if name not in routers:
            continue
        client = active[name]
        before = int(getattr(client, "api_calls", 0))
        try:
            for action_id in action_ids:
                _run_one(engine, routers[name], action_id, report)
        except (AuthError, QuotaExhaustedError, RetriableCRMError) as exc:
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            logger.warning("routing on %s stopped: %s", name, exc)
        report.api_calls[name] = int(getattr(client, "api_calls", 0)) - before
    return report


def _run_one(engine: Engine, router: Router, action_id: int, report: RoutingReport) -> None:
    with unit_of_work(engine) as session:
        action = session.get(RoutingAction, action_id)
        if action is None or action.status not in ("pending", "sending"):
            return
        lead = session.get(Lead, action.lead_id)
        current_tier = session.scalar(
            select(LeadScore.tier).where(LeadScore.lead_id == action.lead_id, LeadScore.is_current.is_(True)))
        state = LeadLifecycle.deleted if lead is None else LeadLifecycle(lead.lifecycle)
        if state != LeadLifecycle.open and action.status == "pending":
            # Converted, closed, deleted or merged before the action ran: never act on it.
            action.status = CANCELLED
            action.error = not_open_reason(state, "action")
            report.cancelled += 1
            return
        if lead is None:
            action.status = "failed"
            action.error = "LEAD_DELETED: the lead is gone from the store"
            report.failed["LEAD_DELETED"] = report.failed.get("LEAD_DELETED", 0) + 1
            return
        if action.status == "pending" and current_tier is not None and current_tier != action.to_tier:
            action.status = "superseded"
            action.error = f"the lead's tier changed again (now {current_tier}) before the action ran"
            report.superseded += 1
            return
        recovering = action.status == "sending"
        action.status = "sending"
        action.attempts += 1
        attempts = action.attempts
        ref = LeadRef(crm_id=lead.crm_id, email=lead.email, owner_crm_id=lead.owner_crm_id)
    # Committed: from here on a crash leaves the action "sending", and the next run looks it up.
    kind = str(action.params.get("type"))
    try:
        crm_ref = router.find_existing(action, ref) if recovering else None
        if crm_ref is not None:
            report.recovered += 1
        elif state != LeadLifecycle.open:
            # Interrupted, not done in the CRM, and the lead has left "open" since: do not send.
            _finish(engine, action_id, None, not_open_reason(state, "action"), CANCELLED)
            report.cancelled += 1
            return
        else:
            crm_ref = router.perform(action, ref)
    except RetriableCRMError as exc:
        _finish(engine, action_id, None, f"{exc.code or 'RETRIABLE'}: {exc}",
                "failed" if attempts >= MAX_ATTEMPTS else "sending")
        report.retry_later += 1
        raise
    except (AuthError, QuotaExhaustedError):
        raise
    except CRMError as exc:
        reason = exc.code or (f"HTTP_{exc.status}" if exc.status else type(exc).__name__)
        _finish(engine, action_id, None, f"{reason}: {exc}", "failed")
        report.failed[reason] = report.failed.get(reason, 0) + 1
        return
    _finish(engine, action_id, crm_ref[:128], None, "done")
    report.done[kind] = report.done.get(kind, 0) + 1


def _finish(engine: Engine, action_id: int, crm_ref: str | None, error: str | None, status: str) -> None:
    with unit_of_work(engine) as session:
        action = session.get(RoutingAction, action_id)
        if action is None:
            return
        action.status = status
        action.error = error
        if crm_ref is not None:
            action.crm_ref = crm_ref
        if status == "done":
            action.done_at = datetime.now(UTC)
