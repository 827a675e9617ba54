"""The crmsim orchestrator: one simulated funnel feeding a Salesforce and a HubSpot API server.

:class:`CRMSim` builds the :class:`~crmsim.funnel.World`, starts both API servers on loopback,
replays the simulated history into their stores (with faults disabled), then applies the fault
plan, and optionally serves the admin endpoint (:mod:`crmsim.admin`). Use it as a context
manager::

    with CRMSim(leads=2000, seed=1) as sim:
        creds = sim.info()
        sim.advance(7)
"""

from __future__ import annotations

import dataclasses
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from crmsim.admin import AdminServer
from crmsim.faults import FaultPlan, parse_fault_spec
from crmsim.funnel import World
from crmsim.strictness import Strictness, parse_strictness

if TYPE_CHECKING:
    from crmsim.hubspot.server import HubSpotServer
    from crmsim.salesforce.server import SalesforceServer


class CRMSim:
    """A running simulator: ``salesforce`` and ``hubspot`` servers fed by ``world``.

    ``faults`` is a spec for :func:`crmsim.faults.parse_fault_spec`; it is parsed in the
    constructor so a bad spec fails before anything starts (:class:`FaultSpecError`). ``csv``
    imports people from a real data set instead of simulating them (``leads``, ``base_rate`` and
    ``drift_day`` are then ignored). Ports 0 pick free ports. ``strict`` is a spec for
    :func:`crmsim.strictness.parse_strictness` over the realistic defaults (org set-up and
    undocumented behaviour: validation rules, inactive reps, search tie order, hub tier...).
    ``converted_lead_edit`` grants the Salesforce org "View and Edit Converted Leads" (default off:
    converted Leads refuse updates).
    """

    def __init__(self, *, leads: int = 12000, seed: int = 0, history_days: int = 540, faults: str | None = None,
                 drift_day: int | None = None, base_rate: float = 0.10, csv: str | None = None,
                 host: str = "127.0.0.1", admin: bool = True, dq_rate: float = 0.03,
                 activity_scale: float = 1.0, crm_split: float = 0.5, port_sf: int = 0, port_hs: int = 0,
                 port_admin: int = 0, strict: str | None = None,
                 converted_lead_edit: bool = False) -> None:
        self.leads = leads
        self.seed = seed
        self.history_days = history_days
        self.faults = faults
        self.drift_day = drift_day
        self.base_rate = base_rate
        self.csv = csv
        self.host = host
        self.admin = admin
        self.dq_rate = dq_rate
        self.activity_scale = activity_scale
        self.crm_split = crm_split
        self.port_sf = port_sf
        self.port_hs = port_hs
        self.port_admin = port_admin
        self.converted_lead_edit = converted_lead_edit
        self._plans = parse_fault_spec(faults)
        self.strict = strict
        self.strictness: Strictness = parse_strictness(strict)
        self.inactive_owner_ids: list[str] = []
        self._lock = threading.RLock()
        self._admin: AdminServer | None = None
        self._started = False
        self.last_generation: dict[str, Any] = {}

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> CRMSim:
        """Build the world, start both servers (and the admin endpoint), generate the history."""
        from crmsim.hubspot.server import HubSpotServer
        from crmsim.salesforce.server import SalesforceServer

        if self._started:
            raise RuntimeError("CRMSim already started")
        if self.csv:
            self.world = World.from_csv(self.csv, seed=self.seed, history_days=self.history_days,
                                        crm_split=self.crm_split)
        else:
            self.world = World(seed=self.seed, leads=self.leads, history_days=self.history_days,
                               base_rate=self.base_rate, dq_rate=self.dq_rate, drift_day=self.drift_day,
                               crm_split=self.crm_split, activity_scale=self.activity_scale)
        self.salesforce: SalesforceServer = SalesforceServer(self.world.clock, seed=self.seed, host=self.host,
                                                             port=self.port_sf)
        self.hubspot: HubSpotServer = HubSpotServer(self.world.clock, seed=self.seed, host=self.host,
                                                    port=self.port_hs)
        self.salesforce.store.converted_lead_edit = self.converted_lead_edit
        self.world.attach(self.salesforce.store, "salesforce")
        self.world.attach(self.hubspot.store, "hubspot")
        self._started = True
        try:
            # History is written with faults off: faults are for API clients, not for the feed.
            self.salesforce.faults.set_plan(FaultPlan())
            self.hubspot.faults.set_plan(FaultPlan())
            self.last_generation = self.world.generate().as_dict()
            self._apply_strictness()
            self.salesforce.start()
            self.hubspot.start()
            self._apply_plans(self.seed)
            self.reset_counts()
            if self.admin:
                self._admin = AdminServer(self, host=self.host, port=self.port_admin)
                self._admin.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _apply_strictness(self) -> None:
        """Org set-up that comes after the history: rules, deactivated reps, hub behaviour."""
        from crmsim.salesforce.store import share_rule

        org = self.strictness
        store = self.salesforce.store
        if org.validation_rule > 0:
            store.validation_rules.append(share_rule(org.validation_rule, seed=self.seed))
        if org.inactive_owners:
            self.inactive_owner_ids = store.deactivate_owners(org.inactive_owners, seed=self.seed)
        self.hubspot.apply_strictness(org, seed=self.seed)

    def stop(self) -> None:
        """Stop the admin endpoint and both servers (safe to call twice)."""
        if self._admin is not None:
            self._admin.stop()
            self._admin = None
        if self._started:
            self.salesforce.stop()
            self.hubspot.stop()
            self._started = False

    def __enter__(self) -> CRMSim:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- queries and controls ---------------------------------------------------------------------

    @property
    def admin_url(self) -> str | None:
        """Base URL of the admin endpoint (None when ``admin=False``)."""
        return self._admin.url if self._admin is not None else None

    def info(self) -> dict[str, Any]:
        """URLs and credentials of both APIs, and the admin URL."""
        sf, hs = self.salesforce, self.hubspot
        return {
            "salesforce": {"instance_url": sf.instance_url, "session_id": sf.session_id,
                           "client_id": sf.client_id, "client_secret": sf.client_secret,
                           "username": sf.username, "password": sf.password,
                           "ca_bundle": str(sf.ca_bundle)},
            "hubspot": {"host": hs.base_url, "access_token": hs.access_token},
            "admin_url": self.admin_url,
            "now": self.world.now.isoformat(),
            "seed": self.seed,
        }

    def advance(self, days: float) -> dict[str, Any]:
        """Move the simulation ``days`` forward; returns counts of new leads, activities,
        conversions, status changes, deletions and merges, and the new ``now``."""
        with self._lock:
            return self.world.advance(days).as_dict()

    def reps_leave_feedback(self, *, share: float = 0.06, seed: int | None = None) -> dict[str, dict[str, int]]:
        """Reps flag scores on a share of scored open leads, more often where the score is far
        from the truth (see :mod:`crmsim.feedback`); returns counts per CRM and value."""
        from crmsim.feedback import reps_leave_feedback

        with self._lock:
            return reps_leave_feedback(self.salesforce.store, self.hubspot.store, self.world.truth(), share=share,
                                       seed=self.seed if seed is None else seed)

    def truth(self) -> list[dict[str, Any]]:
        """Hidden ground truth per person (see :meth:`crmsim.funnel.World.truth`)."""
        with self._lock:
            return self.world.truth()

    def set_faults(self, spec: str | None, seed: int = 0) -> None:
        """Replace the fault plans of both servers (None or "" turns faults off)."""
        plans = parse_fault_spec(spec)
        with self._lock:
            self.faults = spec
            self._plans = plans
            self._apply_plans(seed)

    def fault_plans(self) -> dict[str, dict[str, Any]]:
        """The fault plans in force, per API."""
        return {api: dataclasses.asdict(plan) for api, plan in self._plans.items()}

    def _apply_plans(self, seed: int) -> None:
        self.salesforce.faults.set_plan(self._plans["salesforce"], seed=seed)
        self.hubspot.faults.set_plan(self._plans["hubspot"], seed=seed + 1)

    def call_counts(self) -> dict[str, Any]:
        """API calls served so far, per API and per route label."""
        return {"salesforce": self.salesforce.call_counts(), "hubspot": self.hubspot.call_counts(),
                "total": {"salesforce": self.salesforce.api_calls, "hubspot": self.hubspot.api_calls}}

    def reset_counts(self) -> None:
        """Zero both servers' call counters."""
        self.salesforce.reset_counts()
        self.hubspot.reset_counts()
