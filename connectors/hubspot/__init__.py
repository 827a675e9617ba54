"""HubSpot connector: ``client`` (factory, retries, error mapping), ``records`` (normalisation),
``streams`` (keyset-paged search, lists, events), ``settings`` (properties, page sizes)."""
