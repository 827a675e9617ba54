"""The Salesforce client factory: ``simple_salesforce.Salesforce`` (unmodified) behind one
``request`` method that applies the retry policy, the API budget and the error mapping.

Authentication, in order of preference:

* OAuth client credentials (``client_id`` + ``client_secret_env`` + ``domain``): the client logs in
  again by itself when a session expires (a 401 ``INVALID_SESSION_ID``). The access token is kept
  per process (:func:`cached_token`): the next client of the same org and connected app in the
  process (a partitioned sync's next unit, write-back, routing) starts with it instead of logging
  in again; one whose first call finds it expired logs in once and replaces it;
* a session id (``session_id_env`` + ``instance_url``): no automatic re-login, so an expired
  session surfaces as :class:`AuthError` after one rebuild of the client.

With ``login_via_instance: true`` + ``ca_bundle`` (crmsim, or any instance reached without the
public login hosts) the HTTP session comes from ``connectors.salesforce.session.simulator_session``:
it trusts that CA, ignores ``REQUESTS_CA_BUNDLE`` and sends ``*.salesforce.com`` logins to the instance.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

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
    missing_ca_bundle,
    sent_unanswered,
    timeout_error,
)
from connectors.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry, retry_after_seconds
from connectors.salesforce.session import simulator_session
from connectors.timeparse import parse_http_date

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Access tokens by org and connected app, for this process: (session id, instance host).
_tokens: dict[tuple[str, ...], tuple[str, str]] = {}
_tokens_lock = threading.Lock()


def _token_key(conn: ConnectionConfig, secret: str) -> tuple[str, ...]:
    """The org (login domain, instance) and the connected app (its id and a digest of its
    secret: a rotated secret never reuses a token got with the old one)."""
    return (conn.domain or "", conn.instance_url or "", conn.client_id or "",
            hashlib.sha256(secret.encode()).hexdigest())


def cached_token(conn: ConnectionConfig, secret: str) -> tuple[str, str] | None:
    """The access token this process holds for ``conn``'s org and app (session id, instance)."""
    with _tokens_lock:
        return _tokens.get(_token_key(conn, secret))


def forget_tokens() -> None:
    """Drop every access token this process holds (the next client logs in)."""
    with _tokens_lock:
        _tokens.clear()

# errorCodes that may succeed when repeated (record locks, stale query cursors). QUERY_TIMEOUT is
# not among them: the same query times out again; the connector re-asks with a smaller page.
RETRIABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "INVALID_QUERY_LOCATOR"})
QUOTA_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "TOTAL_REQUESTS_LIMIT_EXCEEDED"})


def _error_code(exc: SalesforceError) -> str | None:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        code = content[0].get("errorCode") or content[0].get("statusCode")
        return str(code) if code else None
    if isinstance(content, dict):
        code = content.get("errorCode") or content.get("error")
        return str(code) if code else None
    return None


def _error_message(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("message") or "")
    if isinstance(content, dict):
        return str(content.get("message") or content.get("error_description") or "")
    return ""


_LIMIT_INFO_RE = re.compile(r"api-usage=(\d+)/(\d+)")


def is_concurrency_limit(exc: SalesforceError, headers: Any) -> bool:
    """True when a ``REQUEST_LIMIT_EXCEEDED`` is a concurrency limit, not the daily quota.

    Salesforce uses the same errorCode (and HTTP 403) for both, so the house rule "decide by
    status/code, not message text" cannot apply: the documented messages tell them apart
    ("ConcurrentRequests Limit exceeded." / "ConcurrentPerOrgLongTxn Limit exceeded." vs
    "TotalRequests Limit exceeded."), and ``Sforce-Limit-Info`` (api-usage=used/max) confirms the
    daily allocation is not spent. Anything else is treated as the quota (the safe side: stop).
    """
    message = _error_message(exc)
    if message.startswith("Concurrent"):
        return True
    if message.startswith("TotalRequests"):
        return False
    info = headers.get("Sforce-Limit-Info") if headers is not None else None
    match = _LIMIT_INFO_RE.search(info or "")
    if match is None or message:
        return False
    return int(match.group(1)) < int(match.group(2))


def map_salesforce_error(exc: BaseException, headers: Any = None) -> CRMError | None:
    """The :class:`CRMError` for a simple-salesforce or requests exception (None: not ours).

    Decided by HTTP status and ``errorCode``, never by message text, except where Salesforce gives
    two meanings one code (``REQUEST_LIMIT_EXCEEDED``, see :func:`is_concurrency_limit`).
    ``headers`` are the failed response's headers (for ``Retry-After`` and ``Sforce-Limit-Info``).
    """
    if isinstance(exc, SalesforceAuthenticationFailed):
        return AuthError(f"Salesforce login failed ({exc.code})", status=401, code=str(exc.code))
    if (gone := missing_ca_bundle("Salesforce", exc)) is not None:
        return gone
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                  | requests.exceptions.ChunkedEncodingError):
        if (untrusted := certificate_error("Salesforce", exc)) is not None:
            return untrusted
        return RetriableCRMError(f"Salesforce connection failed: {connection_failure(exc)}{address_of(exc)}")
    if not isinstance(exc, SalesforceError):
        return None
    code = _error_code(exc)
    status = exc.status
    if isinstance(exc, SalesforceExpiredSession):
        return AuthError("Salesforce session expired or invalid", status=status, code=code)
    if code in QUOTA_CODES:
        if is_concurrency_limit(exc, headers):
            return RetriableCRMError(f"Salesforce concurrency limit ({_error_message(exc)[:80]})", status=status,
                                     code=code, retry_after=retry_after_seconds(headers))
        return QuotaExhaustedError(f"Salesforce API limit reached ({code})", status=status, code=code)
    if code in RETRIABLE_CODES or status == 429 or status >= 500:
        return RetriableCRMError(f"Salesforce {status} {code or ''}".strip(), status=status, code=code,
                                 retry_after=retry_after_seconds(headers))
    if isinstance(exc, SalesforceRefusedRequest | SalesforceMalformedRequest | SalesforceResourceNotFound
                  | SalesforceMoreThanOneRecord | SalesforceGeneralError):
        return FatalCRMError(f"Salesforce {status} {code or ''} on {exc.resource_name}".strip(),
                             status=status, code=code)
    return FatalCRMError(f"Salesforce {status} {code or ''}".strip(), status=status, code=code)


def default_session(conn: ConnectionConfig) -> requests.Session:
    """The HTTP session for ``conn``: the crmsim session when ``login_via_instance`` is set."""
    if conn.login_via_instance:
        if not conn.ca_bundle or not conn.instance_url:
            raise ConfigError(f"connection {conn.name!r}: login_via_instance needs ca_bundle and instance_url")
        return simulator_session(conn.ca_bundle, conn.instance_url)
    session = requests.Session()
    if conn.ca_bundle:
        # A private CA must win over REQUESTS_CA_BUNDLE, which requests lets override verify.
        session.trust_env = False
        session.verify = conn.ca_bundle
    return session


def missing_credentials(conn: ConnectionConfig, secrets: ConnectionSecrets) -> str | None:
    """Why a Salesforce client cannot log in for lack of credentials (None: OAuth client
    credentials with a My Domain, or a session id)."""
    if conn.client_id and secrets.client_secret:
        if not conn.domain:
            return f"connection {conn.name!r}: OAuth client credentials need 'domain' (the My Domain, e.g. acme.my)"
        return None
    if secrets.session_id:
        return None
    return f"connection {conn.name!r}: set client_id + client_secret_env + domain, or session_id_env, for Salesforce"


def _default_timeout(session: requests.Session, timeout: tuple[float, float]) -> None:
    """Make ``timeout`` the one of every request ``session`` sends without its own (a session
    shared by several clients takes the latest client's)."""
    held: dict[str, Any] = session.__dict__.setdefault("_leadscore_timeout", {})
    first = not held
    held["timeout"] = timeout
    if not first:
        return
    send = session.request

    def request(method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = held["timeout"]
        return send(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign]


class SalesforceClient:
    """A logged-in ``simple_salesforce.Salesforce`` (``.sf``) with retries, budget and error mapping.

    ``api_calls`` counts HTTP requests sent (logins and retries included; answered, or dropped
    after they left: a connection never made does not count);
    ``last_limit_info`` is the latest ``Sforce-Limit-Info`` header; ``last_server_time`` the
    latest ``Date`` header (the CRM's clock).
    """

    def __init__(self, conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                 session: requests.Session | None = None, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.conn = conn
        self.secrets = secrets
        self.policy = policy
        self.session = session if session is not None else default_session(conn)
        # (connect, read) seconds of every call that names no timeout of its own: simple-salesforce
        # sends most without one, and would wait for a hung CRM forever.
        self.timeout = (CONNECT_TIMEOUT_S, conn.read_timeout_s)
        _default_timeout(self.session, self.timeout)
        self.session.hooks.setdefault("response", []).append(self._on_response)
        self.budget = ApiBudget(conn.api_budget_share, crm="salesforce")
        self.api_calls = 0
        self.last_limit_info: str | None = None
        self.last_server_time: datetime | None = None
        self._last_headers: Any = None
        self._reauthenticated = False
        self.sf: Salesforce = self._with_mapping(lambda: self._login(reuse=True))

    @property
    def api_usage(self) -> dict[str, Any]:
        """``sf.api_usage`` as simple-salesforce parsed it (``{"api-usage": Usage(used, total)}``)."""
        return dict(self.sf.api_usage)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.api_calls += 1
        self._last_headers = response.headers
        when = parse_http_date(response.headers.get("Date"))
        if when is not None:
            self.last_server_time = when
        info = response.headers.get("Sforce-Limit-Info")
        if info:
            self.last_limit_info = info
            self.budget.observe_salesforce(info)
        else:
            self.budget.count_call()

    def _count_unanswered(self) -> None:
        """A request the CRM may have served without answering (a dropped connection, a read
        timeout): a call all the same, for ``api_calls`` and the budget."""
        self.api_calls += 1
        self.budget.count_call()

    def _login(self, *, reuse: bool = False) -> Salesforce:
        """Log in (OAuth client credentials, or the configured session id). ``reuse``: start with
        the process's token for this org and app when there is one (no request); a client built
        on it cannot log in again by itself, so :meth:`request` does once if it has expired."""
        conn, secrets = self.conn, self.secrets
        common: dict[str, Any] = {"version": conn.api_version, "session": self.session}
        problem = missing_credentials(conn, secrets)
        if problem is not None:
            raise ConfigError(problem)
        if conn.client_id and secrets.client_secret:
            secret = secrets.client_secret.get_secret_value()
            token = cached_token(conn, secret) if reuse else None
            if token is not None:
                return Salesforce(session_id=token[0], instance=token[1], **common)
            sf = Salesforce(consumer_key=conn.client_id, consumer_secret=secret, domain=conn.domain, **common)
            with _tokens_lock:
                _tokens[_token_key(conn, secret)] = (sf.session_id, sf.sf_instance)
            return sf
        assert secrets.session_id is not None  # missing_credentials: OAuth or a session id
        return Salesforce(session_id=secrets.session_id.get_secret_value(), instance_url=conn.instance_url, **common)

    def _with_mapping(self, fn: Callable[[], T]) -> T:
        def attempt() -> T:
            self.budget.check()
            try:
                return fn()
            except (SalesforceError, OSError) as exc:  # OSError: requests' errors, and a ca_bundle gone
                if isinstance(exc, requests.exceptions.RequestException) \
                        and not isinstance(exc, requests.exceptions.ChunkedEncodingError) and sent_unanswered(exc):
                    self._count_unanswered()
                mapped = timeout_error("Salesforce", exc, self.conn.read_timeout_s) \
                    or map_salesforce_error(exc, self._last_headers)
                if mapped is None:
                    raise
                raise mapped from exc

        return call_with_retry(attempt, self.policy, what=f"connection {self.conn.name!r} (Salesforce)",
                               unresponsive_key=f"salesforce:{self.conn.name}")

    def request(self, fn: Callable[[Salesforce], T]) -> T:
        """Run ``fn(sf)`` (one REST call) with retries on :class:`RetriableCRMError`, the API budget
        checked first, and errors mapped to :mod:`connectors.errors`.

        An expired session is re-authenticated once per client (client-credentials mode already
        re-logs in inside simple-salesforce, except on a token reused from the process: that
        client logs in here; session-id mode rebuilds the client once).
        """
        try:
            return self._with_mapping(lambda: fn(self.sf))
        except AuthError:
            if self._reauthenticated:
                raise
            self._reauthenticated = True
            logger.info("Salesforce session expired: logging in again once")
            self.sf = self._with_mapping(self._login)
            return self._with_mapping(lambda: fn(self.sf))

    def server_time(self) -> datetime:
        """The org's clock: the ``Date`` header of ``GET limits/`` (which also primes the budget)."""
        limits = self.request(lambda sf: sf.restful("limits/"))
        daily = (limits or {}).get("DailyApiRequests") if isinstance(limits, dict) else None
        if isinstance(daily, dict) and "Max" in daily and "Remaining" in daily:
            self.budget.observe(int(daily["Max"]) - int(daily["Remaining"]), int(daily["Max"]))
        if self.last_server_time is None:
            raise FatalCRMError("Salesforce sent no Date header: cannot bound the sync window")
        return self.last_server_time


def make_salesforce(conn: ConnectionConfig, secrets: ConnectionSecrets, *,
                    session: requests.Session | None = None,
                    policy: RetryPolicy = DEFAULT_POLICY) -> SalesforceClient:
    """A :class:`SalesforceClient` for ``conn`` (logs in now; ``version=conn.api_version``)."""
    return SalesforceClient(conn, secrets, session=session, policy=policy)
