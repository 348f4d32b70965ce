"""mcpgate's Python client for Windmill jobs: ``mcpgate.connect()``."""

from .client import Gateway, connect, exchange_job_token, gateway_settings
from .errors import CallRefused, ExchangeRefused, GatewayError, JobFileError, Refused, ToolFailed
from .jobfile import JobFile, cron_problem, parse_job_file

__all__ = [
    "CallRefused",
    "ExchangeRefused",
    "Gateway",
    "GatewayError",
    "JobFile",
    "JobFileError",
    "Refused",
    "ToolFailed",
    "connect",
    "cron_problem",
    "exchange_job_token",
    "gateway_settings",
    "parse_job_file",
]
