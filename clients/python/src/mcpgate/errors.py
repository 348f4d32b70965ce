"""Typed errors: every refusal carries the gateway's machine-readable reason."""

from __future__ import annotations


class GatewayError(Exception):
    """The gateway could not be reached or answered unexpectedly."""


class Refused(GatewayError):
    """The gateway refused: ``reason`` is its stable code (e.g. ``high_risk_not_approved``)."""

    def __init__(self, reason: str, message: str, *, oauth_error: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.oauth_error = oauth_error


class ExchangeRefused(Refused):
    """The token exchange was refused (RFC 6749 §5.2 error plus mcpgate's reason)."""


class CallRefused(Refused):
    """A tool call was refused by the gateway's pipeline."""


class ToolFailed(GatewayError):
    """The service behind a tool answered with an error."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(f"{tool}: {message}")
        self.tool = tool


class JobFileError(ValueError):
    """A ``.windmill/job.yml`` is invalid; ``location`` is ``file:line:column``."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message
