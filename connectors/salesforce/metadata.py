"""``leadscore crm setup --salesforce-metadata DIR``: the custom fields as Salesforce DX source.

Creating fourteen fields by hand is error-prone, so leadscore writes them as a Salesforce DX
project an admin deploys with ``sf project deploy start --source-dir DIR/force-app`` (or reviews
in a pull request first). leadscore itself still never changes an org's metadata.

Layout (source format)::

    DIR/sfdx-project.json
    DIR/force-app/main/default/objects/Lead/fields/<Field>.field-meta.xml       CustomField
    DIR/force-app/main/default/objects/Account/fields/<Field>.field-meta.xml    CustomField
    DIR/force-app/main/default/permissionsets/Leadscore_Integration.permissionset-meta.xml

Shapes follow the Metadata API: ``CustomField`` (``fullName``, ``label``, ``type`` Number /
Percent / Text / Picklist / DateTime, ``precision`` + ``scale`` for numbers, ``length`` for text,
``valueSet.valueSetDefinition.value`` for picklist values with ``valueSet.restricted``) and
``PermissionSet`` (``fieldPermissions`` with ``field`` = ``Object.Field``, ``editable``,
``readable``; ``objectPermissions``: edit on Lead and Account, read on Contact). The permission
set grants the integration user read and edit on every field leadscore writes and reads
(feedback included), and read on Contact for the account look-up (``connectors.salesforce.accounts``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from config.app_config import ConnectionConfig, SalesforceFields
from connectors.protocols import fields_as
from scoring.feedback import TIERS
from scoring.feedback import VALUES as FEEDBACK_VALUES

METADATA_NS = "http://soap.sforce.com/2006/04/metadata"
PERMISSION_SET = "Leadscore_Integration"
READ_ONLY_OBJECTS = ("Contact",)  # read by the account look-up (a Contact's AccountId by e-mail)


@dataclass(frozen=True)
class CustomFieldDef:
    """One custom field in Metadata API terms."""

    sobject: str  # Lead | Account
    name: str  # API name, e.g. Lead_Score__c
    label: str
    type: str  # Number | Percent | Text | Picklist | DateTime
    description: str
    precision: int = 0
    scale: int = 0
    length: int = 0
    values: tuple[str, ...] = ()
    restricted: bool = False
    written_by_leadscore: bool = True  # False: reps fill it in, leadscore only reads it


def field_defs(fields: SalesforceFields) -> list[CustomFieldDef]:
    """Every custom field the configured names describe (Lead and Account)."""
    defs = [
        CustomFieldDef("Lead", fields.score, "Lead Score", "Number",
                       "1-99: the share of the model's reference leads this lead outranks. Written by leadscore.",
                       precision=3, scale=0),
        CustomFieldDef("Lead", fields.likelihood, "Lead Conversion Likelihood", "Percent",
                       "Calibrated chance of converting within the model's horizon. Written by leadscore.",
                       precision=4, scale=1),
        CustomFieldDef("Lead", fields.fit, "Lead Fit Score", "Number",
                       "1-99: who the lead is (company, role, source), ranked like the score.", precision=2),
        CustomFieldDef("Lead", fields.engagement, "Lead Engagement Score", "Number",
                       "1-99: what the lead did (activity, recency, intent), ranked like the score.", precision=2),
        CustomFieldDef("Lead", fields.score_change, "Lead Score Change", "Number",
                       "The score now minus the score 7 days ago.", precision=3),
        CustomFieldDef("Lead", fields.tier, "Lead Tier", "Picklist", "A (best) to D, from the tier policy.",
                       values=TIERS, restricted=True),
        CustomFieldDef("Lead", fields.reasons, "Lead Score Reasons", "Text",
                       "The top reasons behind the score, grouped as fit or engagement.", length=255),
        CustomFieldDef("Lead", fields.model, "Lead Score Model", "Text", "The model version behind the score.",
                       length=64),
        CustomFieldDef("Lead", fields.scored_at, "Lead Scored At", "DateTime", "When the score was computed."),
        CustomFieldDef("Lead", fields.feedback or "", "Lead Score Feedback", "Picklist",
                       "A rep's view of the score: evidence for the model's owners, not a training label.",
                       values=FEEDBACK_VALUES, restricted=True, written_by_leadscore=False),
        CustomFieldDef("Lead", fields.feedback_comment or "", "Lead Score Feedback Comment", "Text",
                       "Why the score looks wrong (optional).", length=255, written_by_leadscore=False),
        CustomFieldDef("Account", fields.account_score, "Account Lead Score", "Number",
                       "1-99: the account's buying interest from its leads' scores.", precision=2),
        CustomFieldDef("Account", fields.account_engaged_people, "Account Engaged People", "Number",
                       "How many people at the account engaged recently (buying-committee coverage).", precision=5),
    ]
    return [d for d in defs if d.name]  # feedback set to null in the config: no field


def _element(tag: str, value: object, indent: int) -> str:
    text = str(value).lower() if isinstance(value, bool) else escape(str(value))
    return f"{' ' * indent}<{tag}>{text}</{tag}>"


def custom_field_xml(field: CustomFieldDef) -> str:
    """The ``.field-meta.xml`` text of one field."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<CustomField xmlns="{METADATA_NS}">',
             _element("fullName", field.name, 4), _element("description", field.description, 4),
             _element("externalId", False, 4), _element("label", field.label, 4)]
    if field.type in ("Number", "Percent"):
        lines += [_element("precision", field.precision, 4), _element("required", False, 4),
                  _element("scale", field.scale, 4)]
    elif field.type == "Text":
        lines += [_element("length", field.length, 4), _element("required", False, 4)]
    else:
        lines.append(_element("required", False, 4))
    lines += [_element("trackHistory", False, 4), _element("type", field.type, 4)]
    if field.type == "Picklist":
        lines += ["    <valueSet>", _element("restricted", field.restricted, 8), "        <valueSetDefinition>",
                  _element("sorted", False, 12)]
        for value in field.values:
            lines += ["            <value>", _element("fullName", value, 16), _element("default", False, 16),
                      _element("label", value, 16), "            </value>"]
        lines += ["        </valueSetDefinition>", "    </valueSet>"]
    lines.append("</CustomField>")
    return "\n".join(lines) + "\n"


def permission_set_xml(fields: list[CustomFieldDef]) -> str:
    """A permission set granting read and edit on every leadscore field, and Lead/Account edit."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', f'<PermissionSet xmlns="{METADATA_NS}">',
             _element("description", "leadscore integration user: edit the score fields, read rep feedback.", 4)]
    for field in sorted(fields, key=lambda f: (f.sobject, f.name)):
        lines += ["    <fieldPermissions>", _element("editable", True, 8),
                  _element("field", f"{field.sobject}.{field.name}", 8), _element("readable", True, 8),
                  "    </fieldPermissions>"]
    lines += [_element("hasActivationRequired", False, 4), _element("label", "leadscore integration", 4)]
    # Edit where leadscore writes; read-only on what the account look-up reads (Contact's AccountId).
    editable = {**{name: False for name in READ_ONLY_OBJECTS}, **{f.sobject: True for f in fields}}
    for sobject, edit in sorted(editable.items()):
        lines += ["    <objectPermissions>", _element("allowCreate", False, 8), _element("allowDelete", False, 8),
                  _element("allowEdit", edit, 8), _element("allowRead", True, 8),
                  _element("modifyAllRecords", False, 8), _element("object", sobject, 8),
                  _element("viewAllRecords", True, 8), "    </objectPermissions>"]
    lines.append("</PermissionSet>")
    return "\n".join(lines) + "\n"


def write_salesforce_metadata(conn: ConnectionConfig, out_dir: Path) -> list[Path]:
    """Write the DX project for ``conn``'s configured field names; returns the files written."""
    names = fields_as(conn, SalesforceFields)
    fields = field_defs(names)
    base = out_dir / "force-app" / "main" / "default"
    written: list[Path] = []
    project = out_dir / "sfdx-project.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    project.write_text(json.dumps({
        "packageDirectories": [{"path": "force-app", "default": True}],
        "name": "leadscore-fields", "namespace": "", "sourceApiVersion": conn.api_version,
    }, indent=2) + "\n", encoding="utf-8")
    written.append(project)
    for field in fields:
        path = base / "objects" / field.sobject / "fields" / f"{field.name}.field-meta.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(custom_field_xml(field), encoding="utf-8")
        written.append(path)
    perm = base / "permissionsets" / f"{PERMISSION_SET}.permissionset-meta.xml"
    perm.parent.mkdir(parents=True, exist_ok=True)
    perm.write_text(permission_set_xml(fields), encoding="utf-8")
    written.append(perm)
    return written
