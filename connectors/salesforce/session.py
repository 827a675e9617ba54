"""A ``requests.Session`` that sends every Salesforce-bound request to the simulator.

``simple-salesforce`` hard-codes login hosts (``https://login.salesforce.com``,
``https://<domain>.salesforce.com``); this session's adapter rewrites any ``*.salesforce.com``
URL onto the simulator's ``instance_url`` (path and query kept), so OAuth logins and the
client's automatic re-login reach crmsim without patching the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter


class SalesforceRewriteAdapter(HTTPAdapter):
    """Transport adapter that redirects ``*.salesforce.com`` (and ``salesforce.com``) to one instance."""

    def __init__(self, instance_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        target = urlsplit(instance_url)
        self._scheme = target.scheme
        self._netloc = target.netloc

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        host = (url.hostname or "").lower()
        if host == "salesforce.com" or host.endswith(".salesforce.com"):
            request.url = urlunsplit((self._scheme, self._netloc, url.path, url.query, url.fragment))
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                            proxies=proxies)


def simulator_session(ca_bundle: str, instance_url: str) -> requests.Session:
    """A session for ``simple_salesforce.Salesforce(session=...)`` talking to crmsim.

    ``trust_env`` is False so that ``REQUESTS_CA_BUNDLE`` and proxy variables cannot override
    ``verify=ca_bundle``; requests to ``*.salesforce.com`` are rewritten onto ``instance_url``.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_bundle
    session.mount("https://", SalesforceRewriteAdapter(instance_url))
    return session
