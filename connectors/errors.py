"""The connector error hierarchy: typed at the API boundary, mapped from status codes and client
exception types (never from message text).

``RetriableCRMError`` is the only type the retry layers (tenacity here, Celery above) retry.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from config.errors import LeadscoreError


class CRMError(LeadscoreError):
    """Any failure talking to a CRM. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        # Answers of earlier calls of the same batch, set where a later call was refused whole
        # (:func:`refused_midway`); empty otherwise.
        self.answered: list[Any] = []


class RetriableCRMError(CRMError):
    """May work next time: 429, 5xx, a dropped connection, ``UNABLE_TO_LOCK_ROW``.

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class CRMTimeoutError(RetriableCRMError):
    """The CRM did not answer in time: no connection within the connect timeout, or no response
    within the connection's ``read_timeout_s``. Retried less than other retriable errors (a hung
    CRM would hold a worker for every attempt): see :class:`connectors.retry.RetryPolicy`."""


class AuthError(CRMError):
    """Credentials refused or session expired (after the one re-authentication we attempt)."""


def refused_midway(error: CRMError, answered: list[Any]) -> None:
    """Give ``error`` (a call the CRM refused whole: credentials, quota) the answers of the calls
    it had already answered in the same piece of work (a routing batch's
    :class:`connectors.protocols.ActionResult` list): those took effect, the rest did not."""
    error.answered = list(answered)


class FatalCRMError(CRMError):
    """Will fail again unchanged: a malformed request, a missing object, a contract violation."""


class QuotaExhaustedError(FatalCRMError):
    """The org's daily API allocation is spent (``REQUEST_LIMIT_EXCEEDED``, HubSpot ``DAILY``) or the
    run would exceed the configured ``api_budget_share``. Stops the sync; never retried."""


class BadRecord(CRMError):
    """A record that cannot be normalised; it goes to ``quarantined_record`` with ``reason``.

    ``reason`` is a short code (``missing_id``, ``unparsable_timestamp``, ...) used for counting;
    ``detail`` says which field and value.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# CRM refusals a healthy installation meets (docs/crmsim.md): the org's own rules or the record's
# state refuse the write (a validation rule, a converted, merged or deleted lead, an inactive owner,
# a queue-owned record); retrying cannot help and nothing is broken on our side. Keyed by the CRM's
# error code, valued by what it means.
EXPECTED_REFUSALS = {"FIELD_CUSTOM_VALIDATION_EXCEPTION": "validation_rule",
                     "INACTIVE_OWNER_OR_USER": "inactive_owner", "FIELD_INTEGRITY_EXCEPTION": "queue_object",
                     "CANNOT_UPDATE_CONVERTED_LEAD": "converted_lead", "MERGED": "merged",
                     "OBJECT_NOT_FOUND": "deleted", "ENTITY_IS_DELETED": "deleted", "LEAD_DELETED": "deleted"}


def error_code(error: str | None) -> str:
    """The CRM error code a stored failure text starts with (``"CODE: message"``), or ""."""
    return str(error or "").split(":", 1)[0].split(" ", 1)[0]


# Expected refusals whose cause is the record's own state (converted, merged, deleted): nothing an
# admin fixes makes the CRM take the write or action, so no retry is suggested for them.
RECORD_STATE_REFUSALS = frozenset({"converted_lead", "merged", "deleted"})


def fixable(error: str | None) -> bool:
    """Whether a refusal can be fixed in the CRM and the write or action retried (an inactive owner,
    a validation rule, a missing field), unlike a converted, merged or deleted record's."""
    return expected_refusal(error) not in RECORD_STATE_REFUSALS


def unexpected_failures(counts: Mapping[str, int]) -> dict[str, int]:
    """The failures of ``counts`` (reason -> how many) that are not :data:`EXPECTED_REFUSALS`: a
    missing field or property, a write given up after its retries, a workflow whose tier never
    landed. A healthy org refuses the expected ones now and then (its validation rules, a rep who
    left, a converted or deleted lead); these say something must be fixed before the CRM takes
    the writes or actions (``writeback`` and ``route`` exit 1 for them)."""
    return {reason: n for reason, n in counts.items() if n and expected_refusal(reason) is None}


def failure_matches(error: str | None, reason: str) -> bool:
    """Whether a stored failure text is one ``reason`` names, as ``--retry-failed --reason`` takes it:
    the CRM's code or any part of its text (``INACTIVE_OWNER``, ``PROPERTY_DOESNT_EXIST``), or
    what an expected refusal means as ``leadscore status`` words it (``inactive_owner``); either
    case."""
    wanted = reason.strip().lower()
    return bool(wanted) and (wanted in str(error or "").lower() or wanted == (expected_refusal(error) or ""))


def expected_refusal(error: str | None) -> str | None:
    """What an expected CRM refusal means (an :data:`EXPECTED_REFUSALS` value), None for any other failure."""
    return EXPECTED_REFUSALS.get(error_code(error))


def certificate_problem(exc: BaseException) -> str | None:
    """Why the CRM's TLS certificate was not trusted, when that is what ``exc`` is (by type:
    ``ssl.SSLCertVerificationError`` anywhere in the chain requests and urllib3 wrap it in), else
    None. Retrying cannot help: the CA bundle, a proxy or the certificate itself must change."""
    for found in _chain(exc):
        if isinstance(found, ssl.SSLCertVerificationError):
            why = found.verify_message
            return f"certificate verify failed: {why}" if why else "certificate verify failed"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every error it wraps (causes, contexts, urllib3's ``MaxRetryError.reason``,
    errors passed as arguments), each once."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        found = stack.pop()
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        yield found
        linked = (getattr(found, "reason", None), *found.args)
        stack += [found.__cause__, found.__context__, *(e for e in linked if isinstance(e, BaseException))]


def sent_unanswered(exc: BaseException) -> bool:
    """True when ``exc`` is a request that left for the CRM and got no response (the connection
    dropped, the read timed out): the CRM may have served it, so it counts as a call. False for
    a connection never made (refused, unresolved, connect timeout, TLS handshake) and for
    anything else (an error with a response was counted with the response)."""
    import urllib3.exceptions  # the HTTP stack of both CRM clients

    chain = list(_chain(exc))
    never_made = (urllib3.exceptions.ConnectTimeoutError,  # NewConnectionError, NameResolutionError too
                  urllib3.exceptions.SSLError, ssl.SSLError, ConnectionRefusedError)
    if any(isinstance(e, never_made) for e in chain):
        return False
    dropped = (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, ConnectionError, TimeoutError)
    return any(isinstance(e, dropped) for e in chain) and getattr(exc, "response", None) is None


CONNECT_TIMEOUT_S = 10.0  # seconds to connect to a CRM; reading waits the connection's read_timeout_s


def timed_out(exc: BaseException) -> str | None:
    """``"read"`` when ``exc`` is a request that got no response within its read timeout,
    ``"connect"`` when no connection was made within the connect timeout, else None (a refused
    connection or an unresolved host fails at once: not a timeout, whatever urllib3's classes)."""
    import urllib3.exceptions  # the HTTP stack of both CRM clients

    chain = list(_chain(exc))
    if any(isinstance(e, urllib3.exceptions.ReadTimeoutError) for e in chain):
        return "read"
    if any(isinstance(e, urllib3.exceptions.ConnectTimeoutError)
           and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "connect"
    return None


def timeout_error(crm: str, exc: BaseException, read_timeout_s: float) -> CRMTimeoutError | None:
    """The one-line error for a call the CRM did not answer in time (None: ``exc`` is not one)."""
    kind = timed_out(exc)
    if kind is None:
        return None
    if kind == "read":
        return CRMTimeoutError(f"{crm} did not answer within {read_timeout_s:g} s{address_of(exc)}",
                               code="READ_TIMEOUT")
    return CRMTimeoutError(f"{crm} could not be reached within {CONNECT_TIMEOUT_S:g} s{address_of(exc)}",
                           code="CONNECT_TIMEOUT")


def certificate_error(crm: str, exc: BaseException) -> FatalCRMError | None:
    """The one-line error for an untrusted CRM certificate (None when ``exc`` is not one)."""
    problem = certificate_problem(exc)
    if problem is None:
        return None
    return FatalCRMError(f"{crm} connection failed: TLS {problem}{address_of(exc)} (the connection's ca_bundle, "
                         "a TLS-intercepting proxy or the certificate must change: retrying cannot help)",
                         code="CERTIFICATE_VERIFY_FAILED")


_NO_BUNDLE = "Could not find a suitable TLS CA certificate bundle, invalid path: "


def missing_ca_bundle(crm: str, exc: BaseException) -> FatalCRMError | None:
    """The one-line error for a ``ca_bundle`` file gone since the configuration was read (a
    worker runs for weeks; crmsim removes its CA when it stops). requests raises a bare
    ``OSError`` naming the path, its only signal; None when ``exc`` is not that."""
    text = str(exc)
    if type(exc) is not OSError or not text.startswith(_NO_BUNDLE):
        return None
    return FatalCRMError(f"{crm} connection failed: the CA bundle {text[len(_NO_BUNDLE):]} does not exist (restore "
                         "it or change the connection's ca_bundle: retrying cannot help)", code="CA_BUNDLE_MISSING")


def connection_failure(exc: BaseException) -> str:
    """What went wrong with a connection in words an admin reads ("connection refused": nothing
    listens at the address, the CRM or its proxy is down; "host name not resolved"; "connection
    closed without a response"), else the error's class name."""
    import urllib3.exceptions  # the HTTP stack of both CRM clients

    chain = list(_chain(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, urllib3.exceptions.NameResolutionError | socket.gaierror) for e in chain):
        return "host name not resolved"
    if any(isinstance(e, urllib3.exceptions.ProtocolError | http.client.RemoteDisconnected | ConnectionResetError)
           for e in chain):
        return "connection closed without a response"
    return exc.__class__.__name__


def address_of(exc: BaseException) -> str:
    """`` (at https://host:port)`` for a connection error of requests or urllib3: where the
    CRM did not answer (an admin needs the address, not only the error's class). Empty when the
    error does not tell; never a path or query (they may carry record ids)."""
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        return f" (at {parts.scheme}://{parts.netloc})" if parts.netloc else ""
    # urllib3's connection (NewConnectionError: its ``pool`` is a deprecated alias), else its pool.
    pool = getattr(exc, "conn", None) or getattr(exc, "pool", None)
    host, port = getattr(pool, "host", None), getattr(pool, "port", None)
    if host:
        scheme = getattr(pool, "scheme", None)
        return f" (at {scheme + '://' if scheme else ''}{host}{f':{port}' if port else ''})"
    return ""
