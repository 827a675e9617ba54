"""Routing on Salesforce: the Router for Leads (owner/queue, Task, CampaignMember, field updates).

The engine (planning, exactly-once execution, validation) is :mod:`connectors.routing`; this module
is what Salesforce does for each action and how it finds an action's effect after a crash.
``pause_outreach`` defaults to ``Status = 'Nurturing'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from simple_salesforce import format_soql

from config.app_config import AppConfig, ConnectionConfig, RoutingActionConfig
from connectors.actions import actions_for, due, known_names, round_robin_pick, task_description, task_subject
from connectors.errors import AuthError, FatalCRMError, QuotaExhaustedError, refused_midway
from connectors.protocols import ActionOutcome, ActionResult, LeadRef, LiveLead
from connectors.salesforce.records import lead_lifecycle
from connectors.salesforce.writeback import (
    COLLECTION_SIZE,
    COLLECTIONS_PER_COMPOSITE,
    NO_AUTO_ASSIGN,
    RETRIABLE_RECORD_CODES,
)
from store.models import LeadLifecycle, RoutingAction

ROUTING_ACTIONS = frozenset({"assign_owner", "create_task", "add_to_campaign", "set_property", "pause_outreach"})
PAUSE_DEFAULT = ("Status", "Nurturing")
# Owner/queue changes ride in the score write's Lead record when both are pending. Other Lead
# field changes do not: typing and checking them needs a Lead describe per drain, one more call
# than they save (routing sends them in the same Composite call as its Tasks and members).
RIDES_WITH_SCORE = frozenset({"assign_owner"})
BATCH_SIZE = COLLECTION_SIZE * COLLECTIONS_PER_COMPOSITE  # actions per Composite call
# Lead ids per ``Id IN (...)`` query: a REST query is a GET, and its URI with the headers may not
# pass 16,384 bytes (414 URI Too Long); an id quoted, comma-separated and URL-encoded is 28 bytes.
IDS_PER_QUERY = 300


class SalesforceRouter:
    """Routing on Salesforce Leads: OwnerId (queue or user), Task, CampaignMember, field updates."""

    # What this CRM can run (no workflows on Salesforce), and what pause_outreach sets by default.
    actions = ROUTING_ACTIONS
    pause_default = PAUSE_DEFAULT
    rides_with_score = RIDES_WITH_SCORE

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self.client = client
        self.conn = conn
        self._queues: dict[str, str] | None = None  # by Name and by DeveloperName (a rule may give either)
        self._queue_names: list[str] = []  # the Names, as a refused rule's line lists them
        self._campaigns: dict[str, str] | None = None
        self._users: dict[str, str] | None = None
        self._lead_fields: dict[str, dict[str, Any]] | None = None
        self._batch: dict[int, tuple[RoutingAction, LeadRef]] = {}
        self._duplicates: list[int] = []

    # -- lookups (cached per router: one execute_routing run)
    def _query(self, soql: str) -> list[dict[str, Any]]:
        result = self.client.request(lambda sf: sf.query_all(soql))
        return list(result.get("records") or [])

    def queues(self) -> dict[str, str]:
        if self._queues is None:
            rows = self._query("SELECT Id, Name, DeveloperName FROM Group WHERE Type = 'Queue'")
            self._queues = {}
            self._queue_names = sorted({str(row["Name"]) for row in rows if row.get("Name")})
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

    def live_states(self, crm_ids: Sequence[str]) -> dict[str, LiveLead]:
        """Each Lead's state and owner in Salesforce now (``queryAll``: deleted and merged ones
        answer too; one gone even from the recycle bin is deleted), in ceil(n/300) queries."""
        ids = sorted(set(crm_ids))
        out: dict[str, LiveLead] = {}
        for start in range(0, len(ids), IDS_PER_QUERY):
            soql = format_soql("SELECT Id, IsDeleted, MasterRecordId, IsConverted, Status, OwnerId FROM Lead"
                               " WHERE Id IN {}", ids[start:start + IDS_PER_QUERY])
            result = self.client.request(lambda sf, q=soql: sf.query_all(q, include_deleted=True))
            for row in result.get("records") or []:
                if isinstance(row, dict) and row.get("Id"):
                    out[str(row["Id"])] = LiveLead(lead_lifecycle(row, self.conn.closed_statuses),
                                                   str(row["OwnerId"]) if row.get("OwnerId") else None)
        return {crm_id: out.get(crm_id, LiveLead(LeadLifecycle.deleted, None)) for crm_id in ids}

    @staticmethod
    def owner_is_user(owner_crm_id: str | None) -> bool:
        """A User's id (key prefix 005); a queue is a Group (00G)."""
        return bool(owner_crm_id) and str(owner_crm_id).startswith("005")

    def _user(self, key: str) -> str | None:
        return self.users().get(key.lower() if "@" in key else key)

    def problems(self, config: AppConfig, conn: ConnectionConfig) -> list[str]:
        out: list[str] = []
        for key, action in actions_for(config, conn, self.actions):
            if action.type == "assign_owner":
                if action.queue and action.queue not in self.queues():
                    out.append(f"{key}.queue: no queue named {action.queue!r} in connection {conn.name}"
                               + known_names("queues", self._queue_names, action.queue))
                for i, owner in enumerate(action.round_robin or []):
                    if self._user(owner) is None:
                        out.append(f"{key}.round_robin.{i}: no active user {owner!r} in connection {conn.name}")
            elif action.type == "add_to_campaign":
                if action.campaign and action.campaign not in self.campaigns():
                    names = [n for n, i in self.campaigns().items() if n != i]  # names, not the ids also taken
                    out.append(f"{key}.campaign: no campaign named {action.campaign!r} in connection {conn.name}"
                               + known_names("campaigns", names, action.campaign))
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
            return self.pause_default
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
            rows = self._query(format_soql("SELECT Id FROM Task WHERE WhoId = {} AND Subject = {}",
                                           lead.crm_id, task_subject(action)))
            return str(rows[0]["Id"]) if rows else None
        if kind == "add_to_campaign":
            return self._member(action, lead)
        # Field updates are idempotent: setting the same value again changes nothing.
        return None

    def _member(self, action: RoutingAction, lead: LeadRef) -> str | None:
        campaign_id = self.campaigns().get(str(action.params.get("campaign")))
        if campaign_id is None:
            return None
        rows = self._query(format_soql("SELECT Id FROM CampaignMember WHERE CampaignId = {} AND LeadId = {}",
                                       campaign_id, lead.crm_id))
        return str(rows[0]["Id"]) if rows else None

    def perform(self, action: RoutingAction, lead: LeadRef) -> str:
        kind = str(action.params.get("type"))
        if kind == "assign_owner":
            owner = self._owner_for(action, lead)
            self._update_lead(lead, {"OwnerId": owner})
            return owner
        if kind == "create_task":
            body = _task_record(action, lead)
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

    # ------------------------------------------------------------------ batches

    batch_size = BATCH_SIZE

    def _planned(self, action: RoutingAction, lead: LeadRef) -> tuple[str, dict[str, Any], str]:
        """(operation, record, reference on success) of one action: ``update`` of the Lead's fields
        or ``create`` of a Task/CampaignMember. Raises FatalCRMError for what no call can fix."""
        kind = str(action.params.get("type"))
        if kind == "assign_owner":
            owner = self._owner_for(action, lead)
            return "update", {"OwnerId": owner}, owner
        if kind in ("set_property", "pause_outreach"):
            name, value = self._property(action.params)
            return "update", {name: self._typed(name, value)}, f"{name}={value}"
        if kind == "create_task":
            return "create", {"attributes": {"type": "Task"}, **_task_record(action, lead)}, ""
        if kind == "add_to_campaign":
            campaign = str(action.params.get("campaign"))
            campaign_id = self.campaigns().get(campaign)
            if campaign_id is None:
                raise FatalCRMError(f"no campaign named {campaign!r}", code="UNKNOWN_CAMPAIGN")
            member = {"attributes": {"type": "CampaignMember"}, "CampaignId": campaign_id, "LeadId": lead.crm_id,
                      "Status": "Sent"}
            return "create", member, f"member:{campaign_id}"
        raise FatalCRMError(f"action {kind!r} is not supported on Salesforce", code="UNSUPPORTED_ACTION")

    def ride_values(self, action: RoutingAction, lead: LeadRef) -> tuple[dict[str, Any], str]:
        """The Lead field values of an owner/field update that rides in the score write's record."""
        operation, record, ref = self._planned(action, lead)
        if operation != "update":
            raise FatalCRMError(f"action {action.params.get('type')!r} cannot ride along a score write",
                                code="UNSUPPORTED_ACTION")
        return record, ref

    def perform_batch(self, items: Sequence[tuple[RoutingAction, LeadRef]]) -> list[ActionResult]:
        """Run up to :data:`BATCH_SIZE` actions in ONE Composite call of sObject Collections.

        Field updates of one Lead (owner, status, any field) travel as one record of a PATCH
        collection; Tasks and CampaignMembers as records of POST collections (200 per collection,
        5 collections per call). Each action gets the CRM's per-record answer.
        """
        results: list[ActionResult] = []
        self._batch = {action.id: (action, lead) for action, lead in items}
        updates: dict[str, dict[str, Any]] = {}  # lead id -> merged field values
        update_actions: dict[str, list[tuple[int, str]]] = {}  # lead id -> [(action id, ref)]
        creates: list[tuple[int, dict[str, Any], str]] = []
        for action, lead in items:
            try:
                operation, record, ref = self._planned(action, lead)
            except QuotaExhaustedError as exc:  # a look-up refused by the quota: the action is not at fault
                refused_midway(exc, results)
                raise
            except FatalCRMError as exc:
                results.append(ActionResult(action.id, "failed", reason=exc.code or "FATAL", message=str(exc)))
                continue
            if operation == "update":
                updates.setdefault(lead.crm_id, {"attributes": {"type": "Lead"}, "id": lead.crm_id}).update(record)
                update_actions.setdefault(lead.crm_id, []).append((action.id, ref))
            else:
                creates.append((action.id, record, ref))
        # One subrequest per collection of 200: (method, records, [(action ids, ref)] per record).
        collections: list[tuple[str, list[dict[str, Any]], list[list[tuple[int, str]]]]] = []
        lead_ids = list(updates)
        for start in range(0, len(lead_ids), COLLECTION_SIZE):
            chunk = lead_ids[start:start + COLLECTION_SIZE]
            collections.append(("PATCH", [updates[i] for i in chunk], [update_actions[i] for i in chunk]))
        for start in range(0, len(creates), COLLECTION_SIZE):
            chunk_creates = creates[start:start + COLLECTION_SIZE]
            collections.append(("POST", [r for _, r, _ in chunk_creates], [[(a, ref)] for a, _, ref in chunk_creates]))
        self._duplicates = []
        try:
            for start in range(0, len(collections), COLLECTIONS_PER_COMPOSITE):
                results.extend(self._composite(collections[start:start + COLLECTIONS_PER_COMPOSITE]))
            if self._duplicates:
                members = self._existing_members(self._duplicates)
                results = [ActionResult(r.action_id, r.outcome, crm_ref=members.get(r.action_id, r.crm_ref))
                           if r.action_id in members else r for r in results]
        except (AuthError, QuotaExhaustedError) as exc:
            # The Composite calls answered before it took effect; the refused one did not.
            refused_midway(exc, results)
            raise
        return results

    def _existing_members(self, action_ids: list[int]) -> dict[int, str]:
        """The CampaignMember ids that duplicate answers refer to, in one query."""
        wanted: dict[tuple[str, str], int] = {}
        for action_id in action_ids:
            action, lead = self._batch[action_id]
            campaign_id = self.campaigns().get(str(action.params.get("campaign")))
            if campaign_id is not None:
                wanted[(campaign_id, lead.crm_id)] = action_id
        campaigns, leads = sorted({c for c, _ in wanted}), sorted({lead for _, lead in wanted})
        found: dict[int, str] = {}
        for start in range(0, len(leads), IDS_PER_QUERY):
            rows = self._query(format_soql(
                "SELECT Id, CampaignId, LeadId FROM CampaignMember WHERE CampaignId IN {} AND LeadId IN {}",
                campaigns, leads[start:start + IDS_PER_QUERY]))
            found.update({wanted[key]: str(row["Id"]) for row in rows
                          if (key := (str(row["CampaignId"]), str(row["LeadId"]))) in wanted})
        return found

    def _composite(self, collections: Sequence[tuple[str, list[dict[str, Any]], list[list[tuple[int, str]]]]]
                   ) -> list[ActionResult]:
        """One Composite call of up to five collections; each action's result from its record's answer."""
        results: list[ActionResult] = []
        version = self.conn.api_version
        body = {"allOrNone": False, "compositeRequest": [
            {"method": method, "url": f"/services/data/v{version}/composite/sobjects", "referenceId": f"c{n}",
             "body": {"allOrNone": False, "records": records}, "httpHeaders": dict(NO_AUTO_ASSIGN)}
            for n, (method, records, _) in enumerate(collections)]}
        response = self.client.request(lambda sf: sf.restful("composite", method="POST", json=body,
                                                             headers=NO_AUTO_ASSIGN))
        subresponses = response.get("compositeResponse") if isinstance(response, dict) else None
        if not isinstance(subresponses, list):
            raise FatalCRMError(f"unexpected Composite response: {str(response)[:200]}", code="BAD_RESPONSE")
        for n, (method, records, owners) in enumerate(collections):
            sub = subresponses[n] if n < len(subresponses) else None
            answers = sub.get("body") if isinstance(sub, dict) else None
            if not isinstance(answers, list) or len(answers) != len(records) \
                    or not all(isinstance(a, dict) and "success" in a for a in answers):
                # The collection as a whole was refused (or never answered): nothing of it is known done.
                status = int(sub.get("httpStatusCode") or 0) if isinstance(sub, dict) else 0
                code, message = _first_error(answers)
                outcome: ActionOutcome = "retry" if status >= 500 or code in RETRIABLE_RECORD_CODES else "failed"
                if not isinstance(sub, dict):
                    outcome = "unknown"
                for ids in owners:
                    results.extend(ActionResult(a, outcome, reason=code or f"HTTP_{status}", message=message)
                                   for a, _ in ids)
                continue
            for answer, ids in zip(answers, owners, strict=True):
                if answer.get("success"):
                    created = str(answer.get("id") or "")
                    results.extend(ActionResult(a, "done", crm_ref=ref or created) for a, ref in ids)
                    continue
                error = (answer.get("errors") or [{}])[0]
                code = str(error.get("statusCode") or "UNKNOWN")
                if code == "DUPLICATE_VALUE" and method == "POST":
                    # Already a campaign member (added by hand, or by us before a crash): goal reached.
                    self._duplicates.extend(a for a, _ in ids)
                    results.extend(ActionResult(a, "done", crm_ref=ref) for a, ref in ids)
                    continue
                record_outcome: ActionOutcome = "retry" if code in RETRIABLE_RECORD_CODES else "failed"
                results.extend(ActionResult(a, record_outcome, reason=code, message=str(error.get("message") or ""))
                               for a, _ in ids)
        return results


def _first_error(body: Any) -> tuple[str | None, str]:
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        return (str(first.get("errorCode") or first.get("statusCode") or "") or None, str(first.get("message") or ""))
    return None, str(body)[:200]


def _task_record(action: RoutingAction, lead: LeadRef) -> dict[str, Any]:
    """The Task a ``create_task`` action creates (single call or inside a Collection)."""
    task: dict[str, Any] = {
        "WhoId": lead.crm_id,
        "Subject": task_subject(action),
        "Priority": str(action.params.get("priority") or "High"),
        "Status": "Not Started",
        "ActivityDate": due(action, datetime.now(UTC)).date().isoformat(),
        "Description": task_description(action, lead),
    }
    # A user owns it; a lead just assigned to a queue leaves it with leadscore's own user (a
    # queue cannot own a Task): it shows in the lead's open activities for whoever takes the lead.
    if SalesforceRouter.owner_is_user(lead.owner_crm_id):
        task["OwnerId"] = lead.owner_crm_id
    return task
