"""Salesforce connector: ``client`` (factory, retries, error mapping), ``records`` (normalisation),
``streams`` (keyset-paged incremental reads), ``settings`` (objects, fields, page sizes)."""
