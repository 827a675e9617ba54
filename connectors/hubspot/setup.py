"""``crm setup`` on HubSpot: list the contact properties and create the missing score properties,
then the two company properties (``leadscore_account_score``, ``leadscore_engaged_people``, group
``companyinformation``) written on each contact's primary company.

Contact properties in group ``contactinformation``; the tier as an enumeration A-D. A 409 means another run created it
first: that is success. A property that exists with the wrong type is reported. The runner is
:mod:`connectors.setup`.
"""

from __future__ import annotations

from typing import Any

from hubspot.crm.properties import PropertyCreate

from config.app_config import AppConfig, ConnectionConfig, HubSpotFields
from connectors.errors import FatalCRMError
from connectors.protocols import SetupResult, fields_as
from scoring.feedback import TIERS
from scoring.feedback import VALUES as FEEDBACK_VALUES


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


def hubspot_company_property_specs(fields: HubSpotFields) -> list[dict[str, Any]]:
    """The company properties leadscore writes, as ``POST /crm/v3/properties/companies`` bodies."""
    group = "companyinformation"
    return [
        {"name": fields.account_score, "label": "Account score (leadscore)", "type": "number", "fieldType": "number",
         "groupName": group, "description": "1-99: how likely the company's open contacts are to produce a "
         "conversion, ranked like a contact's score. Written by leadscore."},
        {"name": fields.account_engaged_people, "label": "Engaged people (leadscore)", "type": "number",
         "fieldType": "number", "groupName": group,
         "description": "How many of the company's open contacts engage (engagement score 50 or more)."},
    ]


class HubSpotSetup:
    """``crm setup`` on HubSpot: create the missing score contact properties and company properties."""

    def __init__(self, client: Any, conn: ConnectionConfig) -> None:
        self.client = client
        self.conn = conn

    def check_fields(self, result: SetupResult, *, create: bool = True) -> None:
        _create_properties(self.conn, self.client, result, create=create)

    def check_routing(self, config: AppConfig, result: SetupResult) -> None:
        """Nothing beyond the router's checks (owners, workflows, properties)."""


def _create_properties(conn: ConnectionConfig, client: Any, result: SetupResult, *, create: bool = True) -> None:
    fields = fields_as(conn, HubSpotFields)
    _ensure_properties(client, "contacts", "contact", hubspot_property_specs(fields), result, create=create)
    _ensure_properties(client, "companies", "company", hubspot_company_property_specs(fields), result,
                       create=create)


def _ensure_properties(client: Any, object_type: str, label: str, specs: list[dict[str, Any]],
                       result: SetupResult, *, create: bool = True) -> None:
    """Create the missing ``specs`` on ``object_type`` (``create`` False: list them as one problem,
    creating nothing); report existing ones of the wrong type."""
    listing = client.request(lambda c: c.api("properties.core").get_all(
        object_type, _preload_content=False, _request_timeout=c.timeout))
    existing = {str(p["name"]): p for p in listing.get("results") or []}
    absent = [spec["name"] for spec in specs if spec["name"] not in existing]
    if absent and not create:
        result.problems.append(f"{len(absent)} {label} propert{'ies' if len(absent) > 1 else 'y'} missing "
                               f"({absent[0]}{', ...' if len(absent) > 1 else ''}): `leadscore crm setup` creates "
                               f"{'them' if len(absent) > 1 else 'it'}")
        specs = [spec for spec in specs if spec["name"] in existing]
    for spec in specs:
        found = existing.get(spec["name"])
        if found is not None:
            if found.get("type") != spec["type"]:
                result.problems.append(f"{label} property {spec['name']} is of type {found.get('type')}; "
                                       f"leadscore needs {spec['type']}")
            elif spec["type"] == "enumeration":
                values = {str(o.get("value")) for o in found.get("options") or []}
                lacking = [str(o["value"]) for o in spec["options"] if str(o["value"]) not in values]
                if lacking:
                    result.problems.append(f"{label} property {spec['name']} lacks the options {', '.join(lacking)}")
                else:
                    result.present.append(spec["name"])
            else:
                result.present.append(spec["name"])
            continue
        body = PropertyCreate(**{_snake(k): v for k, v in spec.items()})
        try:
            client.request(lambda c, b=body: c.api("properties.core").create(
                object_type, b, _preload_content=False, _request_timeout=c.timeout))
        except FatalCRMError as exc:
            if exc.status != 409:
                raise
            result.present.append(spec["name"])  # created meanwhile by another run: fine
            continue
        result.created.append(spec["name"])


def _snake(key: str) -> str:
    return {"fieldType": "field_type", "groupName": "group_name", "displayOrder": "display_order"}.get(key, key)
