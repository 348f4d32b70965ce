"""Drives the mcpgate console in a real Chromium (Debian's, through Playwright).

One step per run, as tests/console.rs asks; prints one JSON line with what the
browser saw. Every step signs in through the login form first, like a person.

    browser.py STEP --url http://127.0.0.1:PORT --token mgt_... [options]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

CHROMIUM = os.environ.get("MCPGATE_CHROMIUM", "/usr/bin/chromium")


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/console/login")
    page.get_by_label("Gateway token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/console/me")


def shot(page: Page, shots: str | None, name: str) -> None:
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{shots}/{name}.png", full_page=True)


def setup(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    """The guide's first steps: Delegated Access on, the Windmill instance registered."""
    page.goto(f"{a.url}/console/clients")
    before = page.locator("#delegation-state").inner_text()
    if before == "off":
        page.get_by_role("button", name="Turn on").click()
    page.get_by_label("Name").fill("prod")
    page.get_by_label("Base URL").fill(a.windmill)
    page.get_by_label("Workspace").fill("finance")
    page.get_by_role("button", name="Save instance").click()
    page.wait_for_url(f"{a.url}/console/clients")
    shot(page, a.shots, "clients")
    return {
        "before": before,
        "after": page.locator("#delegation-state").inner_text(),
        "instances": page.locator("table tbody tr").all_inner_texts(),
    }


def revoke(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    page.goto(f"{a.url}/console/callers")
    row = page.locator("tr", has_text=a.flow).first
    grant = row.locator("code").first.inner_text()
    calls = row.locator("td").nth(7).inner_text()
    shot(page, a.shots, "workflow-callers")
    row.get_by_role("button", name="Revoke").click()
    result = page.locator("#revoke-result").inner_text()
    return {"grant": grant, "calls": calls, "result": result}


def approve(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    page.goto(f"{a.url}/console/callers")
    row = page.locator("tr", has_text=a.flow).filter(
        has=page.get_by_role("button", name="Approve this delegation")
    )
    count = row.count()
    if count:
        shot(page, a.shots, "workflow-callers-refused")
        row.first.get_by_role("button", name="Approve this delegation").click()
        page.wait_for_load_state()
        if not page.url.endswith("/console/callers"):
            return {"offered": count, "error": page.locator("main").inner_text()}
    approvals = page.locator("tr", has=page.get_by_role("button", name="Withdraw"))
    return {"offered": count, "approvals": approvals.all_inner_texts()}


def audit(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    page.goto(f"{a.url}/console/audit")
    page.get_by_label("Reason code").fill(a.reason)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(f"{a.url}/console/audit?**")
    shot(page, a.shots, "audit")
    return {"rows": page.locator("table tbody tr").all_inner_texts()}


def me(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    page.goto(f"{a.url}/console/me")
    who = page.locator("nav span").first.inner_text().split("@")[0]
    shot(page, a.shots, f"done-in-my-name-{who}")
    return {"rows": page.locator("table tbody tr").all_inner_texts()}


def forbidden(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    """A non-admin on every admin page, and a forged CSRF token on a POST."""
    statuses = {}
    for path in [
        "/console/callers",
        "/console/clients",
        "/console/audit",
        "/console/audit/export",
        "/console/services",
        "/console/users",
        "/console/hooks",
        "/console/dashboard",
    ]:
        response = page.goto(f"{a.url}{path}")
        statuses[path] = response.status if response else None
    # The browser's own cookies, a token that is not this session's.
    forged = page.request.post(
        f"{a.url}/console/logout",
        form={"csrf": "0" * 64},
        headers={"Origin": a.url},
        max_redirects=0,
    )
    cross_site = page.request.post(
        f"{a.url}/console/logout",
        form={"csrf": "0" * 64},
        headers={"Origin": "https://evil.example"},
        max_redirects=0,
    )
    return {"statuses": statuses, "forged_csrf": forged.status, "cross_site": cross_site.status}


def operate(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    """Services (a risk override), Users (a token), Hooks and PII, Dashboard."""
    page.goto(f"{a.url}/console/services")
    page.get_by_label("Pattern (service.action, globs allowed)").fill("bigquery.query")
    page.get_by_label("Risk").select_option("high_risk")
    page.get_by_role("button", name="Set override").click()
    page.wait_for_url(f"{a.url}/console/services")
    shot(page, a.shots, "services")
    override_rows = page.locator("tr", has=page.get_by_role("button", name="Remove")).all_inner_texts()
    action_row = page.locator("#svc-bigquery + table tr", has_text="query").first.inner_text()

    page.goto(f"{a.url}/console/users")
    page.get_by_label("User", exact=True).select_option("bob@example.com")
    page.get_by_label("Name").fill("from the console")
    page.get_by_role("button", name="Create token").click()
    new_token = page.locator("#new-token").inner_text()
    page.goto(f"{a.url}/console/users")
    shot(page, a.shots, "users")
    token_rows = page.locator("tr", has_text="from the console").all_inner_texts()

    page.goto(f"{a.url}/console/hooks")
    page.get_by_role("button", name="Reload hooks from", exact=False).click()
    page.wait_for_url(f"{a.url}/console/hooks")
    shot(page, a.shots, "hooks-and-pii")
    hooks_heading = page.locator("h2").first.inner_text()

    page.goto(f"{a.url}/console/dashboard")
    shot(page, a.shots, "dashboard")
    return {
        "overrides": override_rows,
        "action_row": action_row,
        "new_token": new_token,
        "token_rows": token_rows,
        "hooks_heading": hooks_heading,
        "charts": page.locator("figure svg").count(),
        "bars": page.locator("figure svg rect").count(),
        "live_sessions": page.locator("#live-sessions").inner_text(),
        "live_grants": page.locator("#live-grants").inner_text(),
    }


def tail(page: Page, a: argparse.Namespace) -> dict[str, Any]:
    """The audit's live tail: a row written after the page opened shows up."""
    page.goto(f"{a.url}/console/audit")
    page.get_by_role("link", name="Live tail").click()
    page.wait_for_url(f"{a.url}/console/audit?live=1**")
    refresh = page.locator('meta[http-equiv="refresh"]').get_attribute("content")
    print("ready", flush=True)
    # The test makes a call now; the page reloads itself until its row is there.
    page.get_by_text(a.reason).first.wait_for(timeout=20_000)
    return {"refresh": refresh, "live": page.locator("#live-tail").inner_text()}


STEPS = {
    "tail": tail,
    "operate": operate,
    "setup": setup,
    "revoke": revoke,
    "approve": approve,
    "audit": audit,
    "me": me,
    "forbidden": forbidden,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--windmill", default="")
    parser.add_argument("--flow", default="")
    parser.add_argument("--reason", default="")
    parser.add_argument("--shots", default=None, help="save screenshots here")
    a = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15_000)
        sign_in(page, a.url, a.token)
        out = STEPS[a.step](page, a)
        browser.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
