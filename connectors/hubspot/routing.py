"""Routing on HubSpot: the Router for contacts (owner, task engagement, v2 workflow enrollment,
properties).

The engine (planning, exactly-once execution, validation) is :mod:`connectors.routing`; this module
is what HubSpot does for each action and how it finds an action's effect after a crash.
``pause_outreach`` defaults to ``hs_lead_status = BAD_TIMING`` ("not now").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from config.app_config import AppConfig, ConnectionConfig, RoutingActionConfig
from connectors.actions import (
    action_marker,
    actions_for,
    due,
    known_names,
    round_robin_pick,
    task_description,
    task_subject,
)
from connectors.errors import (
    AuthError,
    FatalCRMError,
    QuotaExhaustedError,
    RetriableCRMError,
    address_of,
    certificate_error,
    connection_failure,
    missing_ca_bundle,
    refused_midway,
    timeout_error,
)
from connectors.hubspot.records import contact_lifecycle
from connectors.hubspot.streams import batch_read_call
from connectors.hubspot.writeback import BATCH_SIZE, RETRIABLE_CATEGORIES
from connectors.protocols import ActionResult, LeadRef, LiveLead
from store.models import LeadLifecycle, RoutingAction

ROUTING_ACTIONS = frozenset({"assign_owner", "create_task", "enroll_workflow", "set_property", "pause_outreach"})
PAUSE_DEFAULT = ("hs_lead_status", "BAD_TIMING")


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
    from hubspot.utils.requests.http_request_builder import Request

    options: dict[str, Any] = {"method": method, "path": path}
    if qs:
        options["qs"] = qs
    # What ``client.client.api_request(options)`` sends (its URL, auth and headers), with the
    # connection's timeout: api_request has none and would wait for a hung CRM forever.
    built = Request(client.client.config, options)
    try:
        response = requests.request(built.get_method(), built.get_url(), timeout=client.timeout,
                                    **built.get_options_for_sending())
    except OSError as exc:  # requests' errors, and the bare OSError of a ca_bundle gone
        if (gone := missing_ca_bundle("HubSpot", exc)) is not None:
            raise gone from exc
        if not isinstance(exc, requests.RequestException):
            raise
        if (untrusted := certificate_error("HubSpot", exc)) is not None:
            raise untrusted from exc
        if (late := timeout_error("HubSpot", exc, client.conn.read_timeout_s)) is not None:
            raise late from exc
        raise RetriableCRMError(f"HubSpot connection failed: {connection_failure(exc)}{address_of(exc)}") from exc
    if response.status_code >= 300:
        error = ApiException(status=response.status_code, reason=response.reason)
        error.body = response.content
        error.headers = response.headers
        raise error
    return _RawResponse(response.headers, response.content)


class HubSpotRouter:
    """Routing on HubSpot contacts: owner, task engagement, v2 workflow enrollment, properties."""

    # What this CRM can run (no contact campaigns API on HubSpot), and pause_outreach's default.
    actions = ROUTING_ACTIONS
    pause_default = PAUSE_DEFAULT
    rides_with_score: frozenset[str] = frozenset()  # each action runs in its own batch call

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
                "contacts", _preload_content=False, _request_timeout=c.timeout))
            self._properties = {str(p["name"]): p for p in body.get("results") or []}
        return self._properties

    def live_states(self, crm_ids: Sequence[str]) -> dict[str, LiveLead]:
        """Each contact's state and owner in HubSpot now, in ceil(n/100) batch reads. A contact not
        answered under its own id is gone: archived (``OBJECT_NOT_FOUND``), or merged (a
        merged-away id answers the contact it was merged into, under that contact's id)."""
        ids = sorted(set(crm_ids))
        out: dict[str, LiveLead] = {}
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start:start + BATCH_SIZE]
            body = {"inputs": [{"id": i} for i in chunk],
                    "properties": ["lifecyclestage", "hs_lead_status", "hubspot_owner_id"]}
            result = self.client.request(partial(batch_read_call, object_type="contacts", body=body))
            not_found = {str(i) for error in result.get("errors") or [] if isinstance(error, dict)
                         for i in (error.get("context") or {}).get("ids") or []}
            answered = {str(c.get("id")): c for c in result.get("results") or [] if isinstance(c, dict)}
            for crm_id in chunk:
                contact = answered.get(crm_id)
                if contact is None:
                    out[crm_id] = LiveLead(LeadLifecycle.deleted if crm_id in not_found else LeadLifecycle.merged, None)
                    continue
                owner = (contact.get("properties") or {}).get("hubspot_owner_id")
                state = contact_lifecycle(contact, self.conn.closed_statuses, self.conn.converted_stages)
                out[crm_id] = LiveLead(state, str(owner) if owner else None)
        return out

    @staticmethod
    def owner_is_user(owner_crm_id: str | None) -> bool:
        """HubSpot's owners are users (it has no queues): any owner id."""
        return bool(owner_crm_id) and str(owner_crm_id).isdigit()

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
            return self.pause_default
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
        for key, action in actions_for(config, conn, self.actions):
            if action.type == "assign_owner":
                if action.queue and self._owner_id(action.queue) is None and not self._team_owners(action.queue):
                    out.append(f"{key}.queue: no owner or team named {action.queue!r} in connection {conn.name} "
                               "(HubSpot has no queues: name an owner's email or a team)")
                for i, owner in enumerate(action.round_robin or []):
                    if self._owner_id(owner) is None:
                        out.append(f"{key}.round_robin.{i}: no owner {owner!r} in connection {conn.name}")
            elif action.type == "enroll_workflow":
                if str(action.workflow_id) not in self.workflows():
                    names = [f"{i} {w.get('name')}" if w.get("name") else i for i, w in self.workflows().items()]
                    out.append(f"{key}.workflow_id: no workflow {action.workflow_id!r} in connection {conn.name}"
                               + known_names("workflows", names, str(action.workflow_id)))
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
            "contacts", lead.crm_id, body, _preload_content=False, _request_timeout=c.timeout))

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

    def ride_values(self, action: RoutingAction, lead: LeadRef) -> tuple[dict[str, Any], str]:
        raise FatalCRMError("no HubSpot action rides along a score write", code="UNSUPPORTED_ACTION")

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
        subject = task_subject(action)
        for start in range(0, len(task_ids), 100):
            request = BatchReadInputSimplePublicObjectId(
                inputs=[{"id": t} for t in task_ids[start:start + 100]], properties=["hs_task_subject"])
            read = self.client.request(lambda c, r=request: c.api("objects.batch").read(
                "tasks", r, _preload_content=False, _request_timeout=c.timeout))
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

            task = self._task_input(action, lead)
            body = SimplePublicObjectInputForCreate(properties=task["properties"], associations=task["associations"])
            created = self.client.request(lambda c: c.api("objects.basic").create(
                "tasks", body, _preload_content=False, _request_timeout=c.timeout))
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

    # ------------------------------------------------------------------ batches

    batch_size = BATCH_SIZE

    def _task_input(self, action: RoutingAction, lead: LeadRef) -> dict[str, Any]:
        """A task create input (properties and the association to the contact, type 204)."""
        due_at = due(action, datetime.now(UTC))
        priority = {"high": "HIGH", "normal": "MEDIUM", "medium": "MEDIUM", "low": "LOW"}.get(
            str(action.params.get("priority") or "High").lower(), "HIGH")
        props = {
            "hs_task_subject": task_subject(action),
            "hs_task_body": task_description(action, lead),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": priority,
            "hs_task_type": "TODO",
            "hs_timestamp": due_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{due_at.microsecond // 1000:03d}Z",
        }
        if lead.owner_crm_id is not None and HubSpotRouter.owner_is_user(lead.owner_crm_id):
            props["hubspot_owner_id"] = lead.owner_crm_id
        return {"properties": props, "associations": [{
            "to": {"id": lead.crm_id},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}],
        }]}

    def perform_batch(self, items: Sequence[tuple[RoutingAction, LeadRef]]) -> list[ActionResult]:
        """Run up to :data:`BATCH_SIZE` actions: contact property changes (owner, status, any
        property) in one ``batch/update``, tasks in one ``batch/create`` with their associations;
        v2 workflow enrollments stay one call per contact (the API has no batch)."""
        results: list[ActionResult] = []
        updates: dict[str, dict[str, str]] = {}
        update_actions: dict[str, list[tuple[int, str]]] = {}
        tasks: list[tuple[int, dict[str, Any]]] = []
        singles: list[tuple[RoutingAction, LeadRef]] = []
        for action, lead in items:
            kind = str(action.params.get("type"))
            try:
                if kind == "assign_owner":
                    owner = self._owner_for(action, lead)
                    props, ref = {"hubspot_owner_id": owner}, owner
                elif kind in ("set_property", "pause_outreach"):
                    name, value = self._property(action.params)
                    props, ref = {name: value}, f"{name}={value}"
                elif kind == "create_task":
                    tasks.append((action.id, self._task_input(action, lead)))
                    continue
                elif kind == "enroll_workflow":
                    singles.append((action, lead))
                    continue
                else:
                    raise FatalCRMError(f"action {kind!r} is not supported on HubSpot", code="UNSUPPORTED_ACTION")
            except QuotaExhaustedError as exc:  # a look-up refused by the quota: the action is not at fault
                refused_midway(exc, results)
                raise
            except FatalCRMError as exc:
                results.append(ActionResult(action.id, "failed", reason=exc.code or "FATAL", message=str(exc)))
                continue
            updates.setdefault(lead.crm_id, {}).update(props)
            update_actions.setdefault(lead.crm_id, []).append((action.id, ref))
        try:
            if updates:
                request = {"inputs": [{"id": cid, "properties": props} for cid, props in updates.items()]}
                body = self.client.request(lambda c: c.api("objects.batch").update(
                    "contacts", request, _preload_content=False, _request_timeout=c.timeout))
                results.extend(_update_results(body, update_actions))
            if tasks:
                create = {"inputs": [task for _, task in tasks]}
                body = self.client.request(lambda c: c.api("objects.batch").create(
                    "tasks", create, _preload_content=False, _request_timeout=c.timeout))
                results.extend(_create_results(body, tasks))
            for action, lead in singles:
                try:
                    results.append(ActionResult(action.id, "done", crm_ref=self.perform(action, lead)))
                except (AuthError, QuotaExhaustedError):
                    raise
                except FatalCRMError as exc:
                    results.append(ActionResult(action.id, "failed", reason=exc.code or "FATAL", message=str(exc)))
        except (AuthError, QuotaExhaustedError) as exc:
            # The calls answered before it took effect; the refused one did not.
            refused_midway(exc, results)
            raise
        return results


def _errors_of(body: dict[str, Any]) -> list[tuple[dict[str, Any], str, str, bool]]:
    """(context, reason, message, retriable) of each error of a 207 batch answer."""
    out = []
    for err in body.get("errors") or []:
        if not isinstance(err, dict):
            continue
        category = str(err.get("category") or "UNKNOWN")
        codes = [str(d.get("code")) for d in err.get("errors") or [] if isinstance(d, dict) and d.get("code")]
        reason = codes[0] if category == "VALIDATION_ERROR" and codes else category
        retriable = category in RETRIABLE_CATEGORIES or str(err.get("subCategory") or "") == "RETRIABLE"
        out.append((err.get("context") or {}, reason, str(err.get("message") or ""), retriable))
    return out


def _update_results(body: dict[str, Any], actions: dict[str, list[tuple[int, str]]]) -> list[ActionResult]:
    written = {str(r.get("id")) for r in body.get("results") or [] if isinstance(r, dict)}
    problems: dict[str, tuple[str, str, bool]] = {}
    for context, reason, message, retriable in _errors_of(body):
        for raw_id in context.get("ids") or []:
            problems[str(raw_id)] = (reason, message, retriable)
    out: list[ActionResult] = []
    for contact_id, ids in actions.items():
        problem = problems.get(contact_id)
        for action_id, ref in ids:
            if problem is not None:
                reason, message, retriable = problem
                out.append(ActionResult(action_id, "retry" if retriable else "failed", reason=reason, message=message))
            elif contact_id in written:
                out.append(ActionResult(action_id, "done", crm_ref=ref))
            else:
                out.append(ActionResult(action_id, "retry", reason="NO_RESULT",
                                        message="HubSpot returned no result for this contact"))
    return out


def _create_results(body: dict[str, Any], tasks: list[tuple[int, dict[str, Any]]]) -> list[ActionResult]:
    # Results come in no promised order: each created task is matched by the marker in its subject.
    by_marker = {action_marker(action_id): action_id for action_id, _ in tasks}
    out: dict[int, ActionResult] = {}
    for created in body.get("results") or []:
        subject = str(((created or {}).get("properties") or {}).get("hs_task_subject") or "")
        for marker, action_id in by_marker.items():
            if subject.endswith(marker):
                out[action_id] = ActionResult(action_id, "done", crm_ref=str(created.get("id")))
                break
    for context, reason, message, retriable in _errors_of(body):
        for index in context.get("index") or []:
            if str(index).isdigit() and int(index) < len(tasks):
                action_id = tasks[int(index)][0]
                out.setdefault(action_id, ActionResult(action_id, "retry" if retriable else "failed",
                                                       reason=reason, message=message))
    # No answer either way: it may exist, so the next run looks it up before creating again.
    return [out.get(action_id, ActionResult(action_id, "unknown", reason="NO_RESULT")) for action_id, _ in tasks]
