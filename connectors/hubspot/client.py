"""The HubSpot client factory: ``hubspot.Client`` (unmodified) behind one ``request`` method that
applies the retry policy, the API budget, rate-limit header tracking and the error mapping.

Which layer retries: **only tenacity**. The client is built with ``retry=False`` so urllib3 does
not silently retry GETs on 429/503 (sleeping ``Retry-After`` three times) while POSTs (search,
batch) get no retry at all; one policy for every call is easier to reason about and to bound.
Calls are made with ``_preload_content=False`` so the raw JSON and the response headers (``Date``,
``X-HubSpot-RateLimit-*``) are available; the body is parsed here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import hubspot
import urllib3
from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
from hubspot.crm.objects.exceptions import ApiException as ObjectsApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from hubspot.events.exceptions import ApiException as EventsApiException
from hubspot.oauth.exceptions import ApiException as OAuthApiException
from pydantic import SecretStr

from config.app_config import ConnectionConfig
from config.errors import ConfigError
from connectors.base import ConnectionSecrets
from connectors.budget import ApiBudget
from connectors.errors import (
    CONNECT_TIMEOUT_S,
    AuthError,
    CRMError,
    FatalCRMError,
    QuotaExhaustedError,
    RetriableCRMError,
    address_of,
    certificate_error,
    connection_failure,
    sent_unanswered,
    timeout_error,
)
from connectors.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry, retry_after_seconds
from connectors.timeparse import parse_http_date

logger = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.hubapi.com"
# Every sub-package of hubspot-api-client has its own, unrelated ApiException class.
API_EXCEPTIONS: tuple[type[Exception], ...] = (
    ObjectsApiException, AssociationsApiException, PropertiesApiException, EventsApiException, OAuthApiException,
)


def _body_json(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def map_hubspot_error(exc: BaseException) -> CRMError | None:
    """The :class:`CRMError` for a hubspot-api-client or urllib3 exception (None: not ours).

    Decided by HTTP status and the body's ``policyName``/``category`` codes, never message text.
    """
    if isinstance(exc, urllib3.exceptions.HTTPError):
        # retry=False: a dropped connection or timeout surfaces as the urllib3 error itself.
        if (untrusted := certificate_error("HubSpot", exc)) is not None:
            return untrusted
        return RetriableCRMError(f"HubSpot connection failed: {connection_failure(exc)}{address_of(exc)}")
    if not isinstance(exc, API_EXCEPTIONS):
        return None
    status = int(getattr(exc, "status", 0) or 0)
    headers = getattr(exc, "headers", None)
    body = _body_json(getattr(exc, "body", None))
    code = str(body.get("policyName") or body.get("category") or body.get("errorType") or "") or None
    if status == 0:
        return FatalCRMError(f"HubSpot request failed before a response ({getattr(exc, 'reason', '')})")
    if status == 429:
        if body.get("policyName") == "DAILY":
            return QuotaExhaustedError("HubSpot daily API limit reached", status=status, code="DAILY")
        return RetriableCRMError(f"HubSpot 429 {code or ''}".strip(), status=status, code=code,
                                 retry_after=retry_after_seconds(headers))
    if status >= 500 or status == 477:
        return RetriableCRMError(f"HubSpot {status}", status=status, code=code,
                                 retry_after=retry_after_seconds(headers))
    if status == 401:
        return AuthError(f"HubSpot authentication failed ({code})", status=status, code=code)
    return FatalCRMError(f"HubSpot {status} {code or ''}".strip(), status=status, code=code)


def missing_credentials(conn: ConnectionConfig, secrets: ConnectionSecrets) -> str | None:
    """Why a HubSpot client cannot start for lack of credentials (None: it has a token)."""
    if secrets.access_token is None:
        return f"connection {conn.name!r}: HubSpot needs access_token_env (a private app token)"
    return None


class HubSpotClient:
    """A ``hubspot.Client`` (``.client``) with retries, budget, rate-limit headers and error mapping.

    ``api_calls`` counts HTTP requests sent (answered, or dropped after they left: a connection
    never made does not count); ``rate_limits`` holds the latest
    ``X-HubSpot-RateLimit-*`` headers; ``last_server_time`` the latest ``Date`` header.
    """

    def __init__(self, conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                 policy: RetryPolicy = DEFAULT_POLICY) -> None:
        problem = missing_credentials(conn, secrets)
        if problem is not None:
            raise ConfigError(problem)
        assert secrets.access_token is not None  # missing_credentials
        self.conn = conn
        self.secrets = secrets
        self.policy = policy
        self.host = (conn.host or DEFAULT_HOST).rstrip("/")
        # (connect, read) seconds of every call (``_request_timeout``).
        self.timeout = (CONNECT_TIMEOUT_S, conn.read_timeout_s)
        self.client = self._build(secrets.access_token)
        self.budget = ApiBudget(conn.api_budget_share, crm="hubspot")
        self.api_calls = 0
        self.rate_limits: dict[str, str] = {}
        self.last_server_time: datetime | None = None
        self._apis: dict[str, Any] = {}

    def _build(self, access_token: SecretStr) -> Any:
        options: dict[str, Any] = {}
        if self.conn.ca_bundle:
            options["ssl_ca_cert"] = self.conn.ca_bundle
        return hubspot.Client.create(access_token=access_token.get_secret_value(), host=self.host, base_url=self.host,
                                     retry=False, **options)

    @property
    def can_refresh(self) -> bool:
        """True when an expired OAuth access token can be refreshed (refresh token + app credentials)."""
        return bool(self.secrets.refresh_token and self.conn.client_id and self.secrets.client_secret)

    def refresh_access_token(self) -> None:
        """Exchange the refresh token for a new access token and rebuild the client with it."""
        conn, secrets = self.conn, self.secrets

        def exchange(c: HubSpotClient) -> Any:
            assert secrets.client_secret is not None and secrets.refresh_token is not None  # can_refresh
            return c.client.oauth.tokens_api.create(
                grant_type="refresh_token", client_id=conn.client_id,
                client_secret=secrets.client_secret.get_secret_value(),
                refresh_token=secrets.refresh_token.get_secret_value(), _preload_content=False,
                _request_timeout=c.timeout)

        body = self._call(exchange)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError("HubSpot token refresh returned no access token")
        self.client = self._build(SecretStr(token))
        self._apis.clear()
        logger.info("HubSpot access token refreshed")

    def api(self, name: str) -> Any:
        """A cached generated API object (``objects.search``, ``objects.basic``, ``objects.batch``,
        ``associations.batch``, ``properties.core``, ``events``): each property access of the
        client builds a new connection pool, so they are built once."""
        found = self._apis.get(name)
        if found is None:
            crm = self.client.crm
            factories: dict[str, Callable[[], Any]] = {
                "objects.search": lambda: crm.objects.search_api,
                "objects.basic": lambda: crm.objects.basic_api,
                "objects.batch": lambda: crm.objects.batch_api,
                "associations.batch": lambda: crm.associations.v4.batch_api,
                "properties.core": lambda: crm.properties.core_api,
                "events": lambda: self.client.events.events_api,
            }
            found = factories[name]()
            self._apis[name] = found
        return found

    def _observe(self, headers: Any) -> None:
        self.api_calls += 1
        if headers is None:
            self.budget.count_call()
            return
        when = parse_http_date(headers.get("Date"))
        if when is not None:
            self.last_server_time = when
        for key in ("X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining",
                    "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining"):
            value = headers.get(key)
            if value is not None:
                self.rate_limits[key] = value
        if headers.get("X-HubSpot-RateLimit-Daily") is not None:
            self.budget.observe_hubspot(headers)
        else:
            self.budget.count_call()

    def request(self, fn: Callable[[HubSpotClient], Any]) -> dict[str, Any]:
        """Run ``fn(self)`` — one generated-API call made with ``_preload_content=False`` — with the
        budget checked first, retries on :class:`RetriableCRMError`, and errors mapped. Returns
        the parsed JSON body ({} for an empty body).

        An expired OAuth token (401) is refreshed once when :attr:`can_refresh`; private-app
        tokens do not expire, so without a refresh token a 401 is an :class:`AuthError`.
        """
        try:
            return self._call(fn)
        except AuthError:
            if not self.can_refresh:
                raise
            self.refresh_access_token()
            return self._call(fn)

    def _call(self, fn: Callable[[HubSpotClient], Any]) -> dict[str, Any]:

        def attempt() -> dict[str, Any]:
            self.budget.check()
            try:
                response = fn(self)
            except API_EXCEPTIONS as exc:
                self._observe(getattr(exc, "headers", None))
                mapped = map_hubspot_error(exc)
                raise (mapped or FatalCRMError(f"HubSpot error {exc.__class__.__name__}")) from exc
            except urllib3.exceptions.HTTPError as exc:
                if sent_unanswered(exc):  # dropped after it left: the CRM may have served it
                    self._observe(None)
                mapped = timeout_error("HubSpot", exc, self.conn.read_timeout_s) or map_hubspot_error(exc)
                raise (mapped or RetriableCRMError("HubSpot connection failed")) from exc
            self._observe(response.headers)
            return _body_json(response.data)

        return call_with_retry(attempt, self.policy, what=f"connection {self.conn.name!r} (HubSpot)",
                               unresponsive_key=f"hubspot:{self.conn.name}")

    def server_time(self) -> datetime:
        """The portal's clock: the ``Date`` header of one cheap property read."""
        self.request(lambda c: c.api("properties.core").get_by_name(
            "contacts", "lastmodifieddate", _preload_content=False, _request_timeout=c.timeout))
        if self.last_server_time is None:
            raise FatalCRMError("HubSpot sent no Date header: cannot bound the sync window")
        return self.last_server_time


def make_hubspot(conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                 policy: RetryPolicy = DEFAULT_POLICY) -> HubSpotClient:
    """A :class:`HubSpotClient` for ``conn`` (``conn.host`` or api.hubapi.com; no call is made)."""
    return HubSpotClient(conn, secrets, policy=policy)
