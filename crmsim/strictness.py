"""Org-dependent behaviour of the simulated CRMs: one documented knob per behaviour.

Real orgs differ in setup (validation rules, deactivated reps, hub tier) and in behaviour the
vendors leave undocumented (the order of search ties). A strictness spec is a comma-separated
``key=value`` list, like a fault spec: ``"sf.validation_rule=0.05,hs.tie_order=id"`` (the prefix
is optional; every key belongs to one CRM). The defaults are the realistic (strict) settings; see
docs/crmsim.md for each knob's evidence.

=======================  ==============================================================================
``validation_rule``      SF: share of Leads that fail an org validation rule on ANY update
                         (``FIELD_CUSTOM_VALIDATION_EXCEPTION``); 0 = the org has no such rule
``inactive_owners``      SF: how many reps (Users owning leads) are deactivated after the history
                         (``INACTIVE_OWNER_OR_USER`` when something is assigned to them)
``tie_order``            HS: order of search results with equal sort values: ``shuffle`` (seeded,
                         undocumented by HubSpot) or ``id`` (ascending id, the old crmsim behaviour)
``merge``                HS: ``new_id`` (a merge creates a new record both old ids point to, the
                         current HubSpot behaviour) or ``survivor`` (the survivor keeps its id)
``batch_invalid``        HS: an invalid value in ``batch/update``: ``request`` (whole-request 400,
                         documented) or ``record`` (per-input 207, the old crmsim behaviour)
``hub_tier``             HS: ``enterprise`` or ``professional`` (the Events API answers 403 below
                         Enterprise)
``search_lag``           HS: seconds (wall clock) before a write is visible to CRM search
``search_rate``          HS: CRM search requests allowed per second per token (0 = unlimited)
``burst``                HS: requests allowed per rolling 10 s (0 = unlimited); 190 for Pro/Enterprise
=======================  ==============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields


class StrictnessSpecError(ValueError):
    """A strictness spec that cannot be parsed; the message names the offending key."""


@dataclass
class Strictness:
    validation_rule: float = 0.0
    inactive_owners: int = 1
    tie_order: str = "shuffle"
    merge: str = "new_id"
    batch_invalid: str = "request"
    hub_tier: str = "enterprise"
    search_lag: float = 0.0
    search_rate: float = 5.0
    burst: int = 190

    @classmethod
    def lenient(cls) -> Strictness:
        """crmsim's old behaviour: what a bare server/store has until :class:`~crmsim.app.CRMSim`
        applies a profile (unit tests of the simulator's own features start from here)."""
        return cls(validation_rule=0.0, inactive_owners=0, tie_order="id", merge="survivor",
                   batch_invalid="record", hub_tier="enterprise", search_lag=0.0, search_rate=0.0, burst=0)


_CHOICES: dict[str, tuple[str, ...]] = {
    "tie_order": ("shuffle", "id"),
    "merge": ("new_id", "survivor"),
    "batch_invalid": ("request", "record"),
    "hub_tier": ("enterprise", "professional"),
}
_CRM = {"validation_rule": "sf", "inactive_owners": "sf"}
_SCOPES = {"sf": "sf", "salesforce": "sf", "hs": "hs", "hubspot": "hs"}


def known_keys() -> list[str]:
    return [f.name for f in fields(Strictness)]


def parse_strictness(spec: str | None) -> Strictness:
    """Parse a spec over the realistic defaults; raises :class:`StrictnessSpecError`."""
    result = Strictness()
    if not spec:
        return result
    types = {f.name: f.type for f in fields(Strictness)}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" not in item:
            raise StrictnessSpecError(f"strictness item {item!r} is not key=value")
        key, value = (part.strip() for part in item.split("=", 1))
        if "." in key:
            scope, key = key.split(".", 1)
            if scope not in _SCOPES:
                raise StrictnessSpecError(f"strictness scope {scope!r} is not one of sf, hs")
            if key in types and _SCOPES[scope] != _CRM.get(key, "hs"):
                raise StrictnessSpecError(f"strictness key {key!r} does not belong to {scope}")
        if key not in types:
            raise StrictnessSpecError(f"strictness key {key!r} is unknown (known: {', '.join(known_keys())})")
        kind = types[key]
        parsed: float | int | str
        if key in _CHOICES:
            if value not in _CHOICES[key]:
                raise StrictnessSpecError(f"strictness key {key!r}: {value!r} is not one of "
                                          f"{', '.join(_CHOICES[key])}")
            parsed = value
        elif kind in ("int", int):
            try:
                parsed = int(value)
            except ValueError as exc:
                raise StrictnessSpecError(f"strictness key {key!r}: {value!r} is not a whole number") from exc
            if parsed < 0:
                raise StrictnessSpecError(f"strictness key {key!r}: {value} is negative")
        else:
            try:
                parsed = float(value)
            except ValueError as exc:
                raise StrictnessSpecError(f"strictness key {key!r}: {value!r} is not a number") from exc
            if parsed < 0 or (key == "validation_rule" and parsed > 1):
                raise StrictnessSpecError(f"strictness key {key!r}: {value} is out of range")
        setattr(result, key, parsed)
    return result
