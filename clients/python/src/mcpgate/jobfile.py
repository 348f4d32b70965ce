"""``.windmill/job.yml``: the same rules as ``mcpgate job validate``.

Errors carry ``file:line:column`` (1-based) of the offending value. The gateway
checks the declaration again at the token exchange; this check is for fast,
local feedback before any job runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import JobFileError

RISK_CLASSES = ("read", "write", "high_risk")
_FIELDS = ("name", "schedule", "timezone", "gateway-services", "script")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9/_+-]+$")


@dataclass(frozen=True)
class JobFile:
    name: str
    script: str
    schedule: str | None = None
    timezone: str | None = None
    # [(service, [risk classes])], in the order written; None = no declaration.
    gateway_services: list[tuple[str, list[str]]] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def declaration(self) -> list[dict[str, list[str]]] | None:
        """The declaration in the exchange's shape: ``[{"bigquery": ["read"]}, ...]``."""
        if self.gateway_services is None:
            return None
        return [{service: list(risks)} for service, risks in self.gateway_services]


def _at(path: str, node: Node) -> str:
    mark = node.start_mark
    column = mark.column + 1
    # Point inside a quoted scalar, at its text, as the gateway does.
    if isinstance(node, ScalarNode) and node.style in ('"', "'"):
        column += 1
    return f"{path}:{mark.line + 1}:{column}"


def _scalar(path: str, node: Node, what: str) -> str:
    if not isinstance(node, ScalarNode):
        raise JobFileError(_at(path, node), f"{what}: expected a string")
    return str(node.value)


def parse_job_file(text: str, path: str = "job.yml", known_services: Iterable[str] | None = None) -> JobFile:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        location = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise JobFileError(location, str(e)) from None
    if not isinstance(root, MappingNode):
        raise JobFileError(
            path, "expected a mapping with name, script and optionally schedule, gateway-services"
        )
    values: dict[str, Node] = {}
    for key_node, value_node in root.value:
        key = _scalar(path, key_node, "key")
        if key not in _FIELDS:
            raise JobFileError(
                _at(path, key_node), f"unknown field `{key}`, expected one of {', '.join(_FIELDS)}"
            )
        values[key] = value_node
    for required in ("name", "script"):
        if required not in values:
            raise JobFileError(path, f"missing field `{required}`")

    name = _scalar(path, values["name"], "name")
    if not _NAME.match(name):
        raise JobFileError(
            _at(path, values["name"]),
            f"name '{name}' must be non-empty and use only letters, digits, '-' or '_'",
        )
    schedule = None
    if "schedule" in values:
        schedule = _scalar(path, values["schedule"], "schedule")
        problem = cron_problem(schedule)
        if problem:
            raise JobFileError(_at(path, values["schedule"]), problem)
    timezone = None
    if "timezone" in values:
        timezone = _scalar(path, values["timezone"], "timezone")
        if not _TIMEZONE.match(timezone):
            raise JobFileError(
                _at(path, values["timezone"]),
                f"timezone '{timezone}' is not an IANA name such as 'UTC' or 'Europe/Paris'",
            )
    script = _scalar(path, values["script"], "script")
    if not script.strip():
        raise JobFileError(_at(path, values["script"]), "script is empty")

    services = None
    if "gateway-services" in values:
        known = set(known_services) if known_services is not None else None
        services = _declaration(path, values["gateway-services"], known)
    return JobFile(name=name, script=script, schedule=schedule, timezone=timezone, gateway_services=services)


def _declaration(path: str, node: Node, known: set[str] | None) -> list[tuple[str, list[str]]]:
    if not isinstance(node, SequenceNode):
        raise JobFileError(_at(path, node), "gateway-services: expected a list of `- service: [classes]`")
    if not node.value:
        raise JobFileError(
            _at(path, node),
            "gateway-services is empty: list at least one service, "
            "or remove the block to run as the service account",
        )
    seen: set[str] = set()
    out: list[tuple[str, list[str]]] = []
    for entry in node.value:
        if not isinstance(entry, MappingNode) or len(entry.value) != 1:
            count = len(entry.value) if isinstance(entry, MappingNode) else 0
            raise JobFileError(
                _at(path, entry),
                "each gateway-services entry names exactly one service "
                f"(`- bigquery: [read]`), found {count}",
            )
        key_node, classes_node = entry.value[0]
        service = _scalar(path, key_node, "service")
        if known is not None and service not in known:
            raise JobFileError(
                _at(path, key_node),
                f"unknown service '{service}' (the gateway has: {', '.join(sorted(known))})",
            )
        if service in seen:
            raise JobFileError(_at(path, key_node), f"service '{service}' is declared twice")
        seen.add(service)
        if not isinstance(classes_node, SequenceNode) or not classes_node.value:
            raise JobFileError(
                _at(path, key_node),
                f"service '{service}': list at least one risk class (read, write, high_risk)",
            )
        risks: list[str] = []
        for class_node in classes_node.value:
            risk = _scalar(path, class_node, "risk class")
            if risk not in RISK_CLASSES:
                raise JobFileError(
                    _at(path, class_node),
                    f"service '{service}': unknown risk class '{risk}', expected read, write or high_risk",
                )
            if risk in risks:
                raise JobFileError(
                    _at(path, key_node), f"service '{service}': risk class '{risk}' is listed twice"
                )
            risks.append(risk)
        out.append((service, risks))
    return out


# Cron: 5 fields (minute first) or 6 (seconds first), UTC unless a timezone is given.
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_RANGES = {
    "second": (0, 59, {}),
    "minute": (0, 59, {}),
    "hour": (0, 23, {}),
    "day of month": (1, 31, {}),
    "month": (1, 12, _MONTHS),
    "day of week": (0, 7, _DAYS),
}


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a valid cron schedule, or None."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        return (
            f"schedule '{expression}' has {len(fields)} fields; expected 5 "
            "(min hour day month weekday) or 6 (with seconds first)"
        )
    names = list(_RANGES)
    if len(fields) == 5:
        names = names[1:]
    for value, name in zip(fields, names, strict=True):
        low, high, aliases = _RANGES[name]
        if not _field_ok(value.upper(), low, high, aliases, name):
            return f"schedule '{expression}' is not a valid cron expression: bad {name} '{value}'"
    return None


def _number(text: str, aliases: dict[str, int]) -> int | None:
    if text in aliases:
        return aliases[text]
    return int(text) if text.isdigit() else None


def _field_ok(value: str, low: int, high: int, aliases: dict[str, int], name: str) -> bool:
    for part in value.split(","):
        if part == "":
            return False
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return False
        if base in ("*", "?"):
            if base == "?" and name not in ("day of month", "day of week"):
                return False
            continue
        if name == "day of month" and base in ("L", "LW"):
            continue
        start_text, _, end_text = base.partition("-")
        start = _number(start_text, aliases)
        end = _number(end_text, aliases) if end_text else start
        if start is None or end is None or not (low <= start <= high and low <= end <= high) or start > end:
            return False
    return True
