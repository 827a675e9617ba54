"""Errors a user must act on. The CLI prints their message on one line and exits 1."""

from __future__ import annotations


class LeadscoreError(Exception):
    """An expected, user-facing failure: the message is one line that says what to do."""


class ConfigError(LeadscoreError):
    """Configuration that cannot be used. The message names the file (or variable) and the key."""
