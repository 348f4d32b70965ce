"""Unit tests of the job.yml rules, the shipped flow definition and the schedule helper."""

from __future__ import annotations

import json
import sys
import unittest
from pathlib import Path

import jsonschema
import yaml

import mcpgate

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "windmill" / "reader"))

import build_flow  # noqa: E402
import schedule  # noqa: E402

GOOD = (
    'name: nightly-pnl-rollup\nschedule: "0 3 * * *"\ngateway-services:\n'
    "  - bigquery: [read]\n  - slack: [read, write]\nscript: |\n  print('hi')\n"
)
KNOWN = {"bigquery", "slack", "metabase"}


class JobFileTests(unittest.TestCase):
    def test_a_good_file_parses(self) -> None:
        job = mcpgate.parse_job_file(GOOD, "job.yml", KNOWN)
        self.assertEqual(job.name, "nightly-pnl-rollup")
        self.assertEqual(job.declaration(), [{"bigquery": ["read"]}, {"slack": ["read", "write"]}])

    def test_errors_point_at_file_line_and_column(self) -> None:
        cases = [
            (GOOD.replace("slack: [read, write]", "slak: [write]"), "job.yml:5:5", "unknown service 'slak'"),
            (GOOD.replace("[read, write]", "[read, delete]"), "job.yml:5:19", "unknown risk class 'delete'"),
            (GOOD.replace("0 3 * * *", "0 25 * * *"), "job.yml:2:12", "bad hour"),
            (
                GOOD.replace("  - slack: [read, write]", "  - bigquery: [write]"),
                "job.yml:5:5",
                "declared twice",
            ),
            (GOOD.replace("schedule:", "schedul:"), "job.yml:2:1", "unknown field `schedul`"),
            (GOOD.replace("0 3 * * *", "0 3 * *"), "job.yml:2:12", "has 4 fields"),
        ]
        for text, location, message in cases:
            with self.subTest(location=location, message=message):
                with self.assertRaises(mcpgate.JobFileError) as caught:
                    mcpgate.parse_job_file(text, "job.yml", KNOWN)
                self.assertEqual(caught.exception.location, location)
                self.assertIn(message, caught.exception.message)

    def test_cron_accepts_what_windmill_and_the_gateway_accept(self) -> None:
        for good in ["0 9 * * 1-5", "*/15 * * * *", "0 0 9 * * MON-FRI", "0 3 1,15 * *", "0 0 L * ?"]:
            self.assertIsNone(mcpgate.cron_problem(good), good)
        for bad in ["60 * * * *", "* * * *", "0 9 * * 8", "0 0 0 32 * *", "*/0 * * * *", "a b c d e"]:
            self.assertIsNotNone(mcpgate.cron_problem(bad), bad)


class FlowTests(unittest.TestCase):
    def test_the_shipped_flow_is_valid_openflow_and_inlines_the_step(self) -> None:
        spec = yaml.safe_load((REPO.parent / "shared/specs/windmill/openflow.yaml").read_text())
        root = {"components": spec["components"], "$ref": "#/components/schemas/OpenFlow"}
        shipped = json.loads((REPO / "windmill/reader/flow.json").read_text())
        jsonschema.validate(shipped, root)
        self.assertEqual(shipped, build_flow.flow(), "flow.json is stale: run windmill/reader/build_flow.py")
        broken = json.loads(json.dumps(shipped))
        broken["value"]["modules"][0]["value"]["type"] = "nonsense"
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.validate(broken, root)

    def test_a_schedule_becomes_windmills_six_field_cron(self) -> None:
        job = mcpgate.parse_job_file(GOOD, "job.yml", KNOWN)
        body = schedule.schedule_body(job, "https://git.example.com/pnl.git", "main")
        self.assertEqual(body["schedule"], "0 0 3 * * *")
        self.assertEqual(body["path"], "f/mcpgate_jobs/nightly_pnl_rollup")
        self.assertEqual(body["timezone"], "UTC")
        self.assertTrue(body["is_flow"])


if __name__ == "__main__":
    unittest.main()
