"""crmsim's Salesforce side: an HTTPS REST simulator for the unmodified ``simple-salesforce`` client.

Modules: ``server`` (:class:`~crmsim.salesforce.server.SalesforceServer`), ``store`` (records and the
funnel projection), ``soql`` (the query subset), ``schema`` (objects and fields), ``session``
(:func:`~crmsim.salesforce.session.simulator_session` for clients), ``testing`` (ready-made setups).
See docs/crmsim-salesforce.md.
"""
