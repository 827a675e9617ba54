"""HubSpot's error envelope as a typed exception the server turns into a JSON response."""

from __future__ import annotations

import json
from typing import Any


class HubSpotAPIError(Exception):
    """An error the API answers with HubSpot's JSON envelope (status, category, message, errors)."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        context: dict[str, list[str]] | None = None,
        sub_category: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context
        self.sub_category = sub_category
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, correlation_id: str) -> dict[str, Any]:
        """The JSON body; 429s use ``errorType`` (HubSpot's rate-limit shape) instead of ``category``."""
        out: dict[str, Any] = {"status": "error", "message": self.message, "correlationId": correlation_id}
        if self.category:
            out["category"] = self.category
        if self.sub_category:
            out["subCategory"] = self.sub_category
        if self.context:
            out["context"] = self.context
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        if self.status != 429:
            out.setdefault("links", {})
        return out


def property_error(name: str, code: str, message: str) -> dict[str, Any]:
    """One entry of a VALIDATION_ERROR's ``errors[]`` naming the offending property."""
    return {"message": message, "code": code, "context": {"propertyName": [name]}}


def validation_error(details: list[dict[str, Any]]) -> HubSpotAPIError:
    """The 400 HubSpot answers for invalid property values (``Property values were not valid: [...]``)."""
    summary = [
        {
            "isValid": False,
            "message": d["message"],
            "error": d["code"],
            "name": d["context"]["propertyName"][0],
        }
        for d in details
    ]
    return HubSpotAPIError(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid: " + json.dumps(summary),
        errors=details,
    )


def not_found(message: str = "resource not found") -> HubSpotAPIError:
    """404 OBJECT_NOT_FOUND."""
    return HubSpotAPIError(404, "OBJECT_NOT_FOUND", message)


def bad_request(message: str, sub_category: str | None = None) -> HubSpotAPIError:
    """400 VALIDATION_ERROR without per-property detail."""
    return HubSpotAPIError(400, "VALIDATION_ERROR", message, sub_category=sub_category)
