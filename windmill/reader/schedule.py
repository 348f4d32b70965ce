"""Create or update the Windmill schedule that runs a repository's job.

``schedule:`` in ``.windmill/job.yml`` (5-field cron, UTC unless ``timezone:``)
becomes a Windmill schedule (6 fields, seconds first) of the shared reader flow
with the repository as its arguments, through Windmill's API
(``schedules/get``, ``schedules/create``, ``schedules/update``).

    WINDMILL_TOKEN=… python schedule.py --windmill https://wm.example.com --workspace finance \\
        --repo https://git.example.com/finance/pnl.git --job-file .windmill/job.yml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import mcpgate

READER_FLOW = "f/mcpgate/run_job"
SCHEDULE_FOLDER = "f/mcpgate_jobs"


def windmill_cron(expression: str) -> str:
    """Windmill schedules take 6 fields, seconds first."""
    return f"0 {expression}" if len(expression.split()) == 5 else expression


def schedule_body(
    job: mcpgate.JobFile,
    repo_url: str,
    ref: str,
    reader_flow: str = READER_FLOW,
    folder: str = SCHEDULE_FOLDER,
) -> dict[str, Any]:
    if not job.schedule:
        raise ValueError(f"job '{job.name}' has no schedule")
    return {
        "path": f"{folder}/{job.name.replace('-', '_')}",
        "schedule": windmill_cron(job.schedule),
        "timezone": job.timezone or "UTC",
        "script_path": reader_flow,
        "is_flow": True,
        "args": {"repo_url": repo_url, "ref": ref},
        "enabled": True,
        "summary": f"{job.name} ({repo_url}@{ref})",
    }


def _request(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (operator's URL)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def upsert_schedule(windmill_url: str, workspace: str, token: str, body: dict[str, Any]) -> str:
    """Create the schedule, or update it if it exists. Returns ``created`` or ``updated``."""
    api = f"{windmill_url.rstrip('/')}/api/w/{urllib.parse.quote(workspace)}/schedules"
    path = body["path"]
    status, text = _request("GET", f"{api}/get/{path}", token)
    if status == 404:
        status, text = _request("POST", f"{api}/create", token, body)
        if status not in (200, 201):
            raise RuntimeError(f"Windmill refused to create schedule {path}: HTTP {status} {text}")
        return "created"
    if status != 200:
        raise RuntimeError(f"Windmill answered HTTP {status} for schedule {path}: {text}")
    edit = {key: body[key] for key in ("schedule", "timezone", "args", "summary")}
    status, text = _request("POST", f"{api}/update/{path}", token, edit)
    if status != 200:
        raise RuntimeError(f"Windmill refused to update schedule {path}: HTTP {status} {text}")
    return "updated"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Create/update a repository job's Windmill schedule.")
    parser.add_argument("--windmill", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--ref", default="main")
    parser.add_argument("--job-file", required=True, type=Path)
    parser.add_argument("--reader-flow", default=READER_FLOW)
    args = parser.parse_args()
    token = os.environ.get("WINDMILL_TOKEN") or os.environ.get("WM_TOKEN")
    if not token:
        sys.exit("set WINDMILL_TOKEN (a Windmill token allowed to manage schedules)")
    job = mcpgate.parse_job_file(args.job_file.read_text(), str(args.job_file))
    body = schedule_body(job, args.repo, args.ref, args.reader_flow)
    outcome = upsert_schedule(args.windmill, args.workspace, token, body)
    print(json.dumps({"schedule": body["path"], "cron": body["schedule"], "outcome": outcome}))
