"""mcpgate's shared reader flow, step 1: run a repository's ``.windmill/job.yml``.

Clones the repository at ``ref`` (HTTPS with a deploy token kept out of the URL
and of the process list), validates the job file with the same rules as
``mcpgate job validate``, exchanges this job's token for a grant with the
declared ``gateway-services`` (no declaration: the service account), and runs
the declared ``script`` with ``mcpgate`` in scope. The script may set
``result``; it is returned as the job's result.

In Windmill this file is the flow's inline step (``flow.json``); it also runs
as a plain process: ``python run_job.py --repo URL [--ref main]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mcpgate


def clone(repo_url: str, ref: str, deploy_token: str, into: Path) -> None:
    """Fetch exactly ``ref`` (branch, tag or commit) of ``repo_url`` into ``into``."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    if deploy_token and repo_url.startswith("https://"):
        basic = base64.b64encode(f"x-access-token:{deploy_token}".encode()).decode()
        # Through the environment: never in the URL, the logs or `ps`.
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    steps = [
        ["git", "init", "--quiet", str(into)],
        ["git", "-C", str(into), "remote", "add", "origin", repo_url],
        ["git", "-C", str(into), "fetch", "--quiet", "--depth", "1", "origin", ref],
        ["git", "-C", str(into), "checkout", "--quiet", "FETCH_HEAD"],
    ]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"git {step[3] if step[1] == '-C' else step[1]} failed: {done.stderr.strip()}")


def main(
    repo_url: str,
    ref: str = "main",
    deploy_token: str = "",
    job_file: str = ".windmill/job.yml",
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mcpgate-job-") as work:
        checkout = Path(work)
        clone(repo_url, ref, deploy_token, checkout)
        path = checkout / job_file
        if not path.is_file():
            raise FileNotFoundError(f"{repo_url}@{ref} has no {job_file}")
        job = mcpgate.parse_job_file(path.read_text(), job_file)
        with mcpgate.connect(job.declaration()) as gateway:
            scope: dict[str, Any] = {
                "__name__": "__job__",
                "mcpgate": gateway,
                "job": job,
            }
            previous = os.getcwd()
            sys.path.insert(0, str(checkout))
            os.chdir(checkout)
            try:
                exec(compile(job.script, f"{job_file}:script", "exec"), scope)  # noqa: S102 (the declared job)
            finally:
                os.chdir(previous)
                sys.path.remove(str(checkout))
            return {
                "job": job.name,
                "grant_id": gateway.grant_id,
                "scope": gateway.scope,
                "result": scope.get("result"),
            }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--ref", default="main")
    parser.add_argument("--job-file", default=".windmill/job.yml")
    args = parser.parse_args()
    try:
        outcome = main(
            args.repo,
            args.ref,
            os.environ.get("MCPGATE_DEPLOY_TOKEN", ""),
            args.job_file,
        )
    except mcpgate.Refused as refused:
        print(json.dumps({"error": refused.reason, "message": refused.message}))
        sys.exit(2)
    except (
        mcpgate.GatewayError,
        mcpgate.JobFileError,
        RuntimeError,
        FileNotFoundError,
    ) as failure:
        print(json.dumps({"error": type(failure).__name__, "message": str(failure)}))
        sys.exit(1)
    print(json.dumps(outcome))
