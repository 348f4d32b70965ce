"""Write ``flow.json`` (OpenFlow) with ``run_job.py`` inline as its step.

python windmill/reader/build_flow.py   # after editing run_job.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def flow() -> dict[str, Any]:
    def from_input(name: str) -> dict[str, str]:
        return {"type": "javascript", "expr": f"flow_input.{name}"}

    return {
        "summary": "mcpgate: run a repository's .windmill/job.yml",
        "description": (
            "Clones the repository at ref, validates .windmill/job.yml, exchanges the job token "
            "for an mcpgate grant with the declared gateway-services (acting as this flow's owner) "
            "and runs the declared script with `mcpgate` in scope."
        ),
        "value": {
            "modules": [
                {
                    "id": "run_job",
                    "summary": "Clone, validate, exchange, run",
                    "value": {
                        "type": "rawscript",
                        "language": "python3",
                        "content": (HERE / "run_job.py").read_text(),
                        "input_transforms": {
                            "repo_url": from_input("repo_url"),
                            "ref": from_input("ref"),
                            "deploy_token": from_input("deploy_token"),
                            "job_file": from_input("job_file"),
                        },
                    },
                }
            ]
        },
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "repo_url": {
                    "type": "string",
                    "description": "HTTPS URL of the repository",
                },
                "ref": {"type": "string", "default": "main"},
                "deploy_token": {
                    "type": "string",
                    "description": "read-only deploy token (a secret variable)",
                },
                "job_file": {"type": "string", "default": ".windmill/job.yml"},
            },
            "required": ["repo_url"],
        },
    }


if __name__ == "__main__":
    (HERE / "flow.json").write_text(json.dumps(flow(), indent=2) + "\n")
