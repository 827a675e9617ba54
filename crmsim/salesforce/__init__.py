"""crmsim's Salesforce side: an HTTPS REST simulator for the unmodified ``simple-salesforce`` client.

Modules: ``server`` (:class:`~crmsim.salesforce.server.SalesforceServer`), ``store`` (records and the
funnel projection), ``soql`` (the query subset), ``schema`` (objects and fields), ``testing``
(ready-made setups); clients reach it through :func:`connectors.salesforce.session.simulator_session`.
See docs/crmsim-salesforce.md.
"""
