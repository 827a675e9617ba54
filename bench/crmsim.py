"""Benchmark crmsim: build time and records served per second through the real CRM clients.

Usage: ``.venv/bin/python bench/crmsim.py [--leads 100000] [--seed 0]``. Prints one JSON object:
generation time, then for Salesforce (simple-salesforce ``query_all_iter`` over all Leads, 2,000
per page) and HubSpot (hubspot-api-client ``basic_api.get_page``, 100 per page) the records read,
API calls, seconds and records per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Run as ``python bench/crmsim.py``, this file's directory comes first on sys.path and its name
# would shadow the crmsim package; drop it (``python -m bench.crmsim`` needs no such help).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import hubspot  # noqa: E402
from simple_salesforce import Salesforce  # noqa: E402

from connectors.salesforce.session import simulator_session  # noqa: E402
from crmsim.app import CRMSim  # noqa: E402


def read_salesforce(info: dict[str, Any]) -> int:
    creds = info["salesforce"]
    client = Salesforce(instance_url=creds["instance_url"], session_id=creds["session_id"],
                        session=simulator_session(creds["ca_bundle"], creds["instance_url"]))
    soql = ("SELECT Id, FirstName, LastName, Email, Company, Title, Industry, NumberOfEmployees, "
            "LeadSource, Status, OwnerId, CreatedDate, SystemModstamp FROM Lead")
    return sum(1 for _record in client.query_all_iter(soql))


def read_hubspot(info: dict[str, Any]) -> int:
    client = hubspot.HubSpot(access_token=info["hubspot"]["access_token"], host=info["hubspot"]["host"])
    properties = ["email", "firstname", "lastname", "jobtitle", "company", "lifecyclestage", "hs_lead_status",
                  "createdate", "lastmodifieddate"]
    count, after = 0, None
    while True:
        page = client.crm.contacts.basic_api.get_page(limit=100, after=after, properties=properties)
        count += len(page.results)
        if page.paging is None or page.paging.next is None:
            return count
        after = page.paging.next.after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    sim = CRMSim(leads=args.leads, seed=args.seed, admin=False).start()
    build_seconds = time.perf_counter() - started
    try:
        info = sim.info()
        result: dict[str, Any] = {"leads": args.leads, "people": sim.last_generation["new_leads"],
                                  "activities": sim.last_generation["new_activities"],
                                  "build_seconds": round(build_seconds, 2)}
        for name, reader in (("salesforce", read_salesforce), ("hubspot", read_hubspot)):
            sim.reset_counts()
            began = time.perf_counter()
            records = reader(info)
            seconds = time.perf_counter() - began
            server = sim.salesforce if name == "salesforce" else sim.hubspot
            result[name] = {"records": records, "api_calls": server.api_calls, "seconds": round(seconds, 2),
                            "records_per_second": round(records / seconds, 1) if seconds else None}
    finally:
        sim.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
