"""Ready-made simulator setups for tests (ours and the connectors'): a started, filled server and clients.

Nothing here runs at import time; each function builds what it returns.
"""

from __future__ import annotations

from datetime import UTC, datetime

from simple_salesforce import Salesforce

from connectors.salesforce.session import simulator_session
from crmsim.model import Campaign, Owner, Person, Queue, SimClock
from crmsim.salesforce.server import SalesforceServer

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def person(i: int, **overrides: object) -> Person:
    """A Salesforce-side funnel person ``P{i:06d}`` created at :data:`T0`; keyword overrides win."""
    values: dict[str, object] = {
        "key": f"P{i:06d}", "crm": "salesforce", "company_key": f"C{i % 50:04d}", "first_name": f"First{i}",
        "last_name": f"Last{i}", "email": f"p{i}@example.com", "title": "VP Sales", "phone": None,
        "lead_source": "Web", "campaign_key": None, "status": "Open", "owner_key": "U001",
        "created_at": T0, "company_name": f"Company {i % 50}", "industry": "Technology", "employees": 120,
        "annual_revenue": 5_000_000.0, "country": "US",
    }
    values.update(overrides)
    return Person(**values)  # type: ignore[arg-type]


def seeded_server(persons: int, *, seed: int = 7, page_size: int = 2000) -> SalesforceServer:
    """A started server with owner U001, queue Q01, campaign K001 and ``persons`` leads; call ``stop()``."""
    clock = SimClock(T0)
    server = SalesforceServer(clock, seed=seed, page_size=page_size)
    store = server.store
    store.put_owner(Owner("U001", "Ann Owner", "ann@acme.example"))
    store.put_queue(Queue("Q01", "SDR Queue"))
    store.put_campaign(Campaign("K001", "Spring Webinar", "Webinar"))
    for i in range(persons):
        store.put_person(person(i))
    server.start()
    return server


def direct_client(server: SalesforceServer) -> Salesforce:
    """A client in session-id mode (no re-login: a 401 raises ``SalesforceExpiredSession``)."""
    session = simulator_session(server.ca_bundle, server.instance_url)
    return Salesforce(session_id=server.session_id, instance_url=server.instance_url, session=session,
                      version="59.0")


def credentials_client(server: SalesforceServer) -> Salesforce:
    """A client in OAuth client-credentials mode (re-logs in on 401 ``INVALID_SESSION_ID``)."""
    session = simulator_session(server.ca_bundle, server.instance_url)
    return Salesforce(consumer_key=server.client_id, consumer_secret=server.client_secret, domain="acme.my",
                      session=session, version="59.0")
