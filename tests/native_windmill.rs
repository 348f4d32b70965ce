//! The shipped Windmill catalog through the gateway, with a real MCP client
//! (rmcp), each person's own Windmill token from the vault, and a local
//! Windmill API that follows `../shared/specs/windmill/openapi-subset.yaml`
//! and checks flows against `openflow.yaml`.

#[path = "support/fake_windmill_api.rs"]
mod fake_windmill_api;
mod support;

use fake_windmill_api::{FakeWindmillApi, check_openflow};
use mcpgate::vault::CredentialKind;
use serde_json::{Value, json};
use support::{
    TestGateway, call, confirmed, failed_text, json_of, ok, rmcp_connect, store_credential,
    text_of, tool_names,
};

const FLOW: &str = "f/standup/daily_digest";
const SCHEDULE: &str = "f/standup/weekday_9am";
const SCRIPT: &str = "f/reports/daily";

/// A gateway with the Windmill catalog, the operator's workspace default
/// (`acme`, overriding the catalog's `demo`), Alice (high_risk) and Bob (write).
/// The gateway with Windmill; `policy` is the config's policy section.
async fn setup_with(policy: &str) -> (FakeWindmillApi, TestGateway) {
    let windmill = FakeWindmillApi::start("acme").await;
    windmill.add_user("alice", "alice@example.com", "alice-windmill-token");
    windmill.add_user("bob", "bob@example.com", "bob-windmill-token");
    let gw = TestGateway::start(&format!(
        "{policy}services:\n  windmill: {{ kind: native, catalog: windmill, base_url: \"{}\", defaults: {{ workspace: acme }} }}\nusers:\n  - email: alice@example.com\n    access: {{ windmill: high_risk }}\n  - email: bob@example.com\n    access: {{ windmill: write }}\n",
        windmill.api_url()
    ))
    .await;
    store_credential(
        &gw,
        "alice@example.com",
        "windmill",
        CredentialKind::Token,
        "alice-windmill-token",
    )
    .await;
    (windmill, gw)
}

/// Runs, schedules and their switches are effects others see: a person
/// confirms them. These tests are about the connector, so the operator
/// relaxes that (`policy.relax_confirm`); the user story keeps the default.
async fn setup() -> (FakeWindmillApi, TestGateway) {
    setup_with("policy:\n  relax_confirm: [\"windmill.*\"]\n").await
}

/// Problems of `flow` against the OpenFlow schema itself (`openflow.yaml`'s
/// `components.schemas.OpenFlow`, refs resolved within that document).
fn openflow_problems(flow: &Value) -> Vec<String> {
    let file = support::repo().join("../shared/specs/windmill/openflow.yaml");
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let schema = json!({
        "$ref": "#/components/schemas/OpenFlow",
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).expect("openflow.yaml compiles");
    validator
        .iter_errors(flow)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// The daily digest flow, in OpenFlow: an inline Bun step, a loop over its
/// result with a script step and an identity step, and a branch.
fn digest_flow() -> Value {
    json!({
        "modules": [
            {
                "id": "fetch",
                "summary": "open issues assigned to me",
                "value": {
                    "type": "rawscript",
                    "language": "bun",
                    "content": "export async function main(project: string) { return [] }",
                    "input_transforms": {
                        "project": {"type": "javascript", "expr": "flow_input.project"}
                    }
                }
            },
            {
                "id": "each",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "results.fetch"},
                    "skip_failures": true,
                    "modules": [
                        {"id": "render", "value": {
                            "type": "script",
                            "path": SCRIPT,
                            "input_transforms": {"issue": {"type": "javascript", "expr": "flow_input.iter.value"}}
                        }},
                        {"id": "keep", "value": {"type": "identity"}}
                    ]
                }
            },
            {
                "id": "blocked",
                "value": {
                    "type": "branchone",
                    "branches": [{"expr": "results.each.some(r => r.blocked)", "modules": []}],
                    "default": [{"id": "post", "value": {
                        "type": "rawscript",
                        "language": "python3",
                        "content": "def main(channel: str):\n    return channel",
                        "input_transforms": {"channel": {"type": "static", "value": "#standup"}}
                    }}]
                }
            }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ai_client_creates_a_flow_and_a_weekday_schedule_then_disables_it() {
    let (windmill, gw) = setup_with("").await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let tools = tool_names(&alice).await;
    assert!(
        tools.contains(&"windmill_read_actions".into())
            && tools.contains(&"windmill_write_actions".into()),
        "{tools:?}"
    );
    // The script the flow's loop calls.
    ok(
        &alice,
        "windmill_write_actions",
        json!({"action": "create_script", "path": SCRIPT, "summary": "Render one issue",
               "language": "python3", "content": "def main(issue: dict):\n    return issue"}),
    )
    .await;

    // 1. The flow.
    let created = ok(
        &alice,
        "windmill_write_actions",
        json!({"action": "create_flow", "path": FLOW, "summary": "Daily stand-up digest",
               "value": digest_flow(),
               "schema": {"type": "object", "properties": {"project": {"type": "string"}}, "required": ["project"]}}),
    )
    .await;
    assert!(text_of(&created).contains(FLOW), "{}", text_of(&created));
    let sent = windmill.last();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str(), sent.who.as_str()),
        ("POST", "/api/w/acme/flows/create", "alice")
    );
    assert_eq!(sent.body["value"], digest_flow());
    let stored = windmill.flow(FLOW).expect("the flow is stored");
    assert_eq!(stored["value"], digest_flow());
    assert_eq!(stored["edited_by"], "alice");
    check_openflow(&stored).expect("the fake's own OpenFlow check");
    let problems = openflow_problems(&stored);
    assert!(problems.is_empty(), "{problems:#?}");
    // The schema check can fail: a module of no known type does not pass.
    let mut broken = stored.clone();
    broken["value"]["modules"][0]["value"] = json!({"type": "teleport"});
    assert!(!openflow_problems(&broken).is_empty());

    // 2. A schedule running it every weekday at 09:00, Paris time. Others
    // see its effects: the person confirms first (the guide's
    // human-in-the-loop), and nothing is created until they do.
    let create = json!({"action": "create_schedule", "path": SCHEDULE, "schedule": "0 0 9 * * 1-5",
           "timezone": "Europe/Paris", "script_path": FLOW, "is_flow": true,
           "args": {"project": "PROJ"}, "summary": "Stand-up digest, weekdays 09:00"});
    let ask = ok(&alice, "windmill_write_actions", create.clone()).await;
    let ask = ask.structured_content.clone().unwrap();
    assert_eq!(ask["confirmation_required"], true, "{ask}");
    assert!(
        windmill.schedule(SCHEDULE).is_none(),
        "created before the confirmation"
    );
    let mut with_token = create;
    with_token["confirm"] = ask["confirm"].clone();
    ok(&alice, "windmill_write_actions", with_token).await;
    let sent = windmill.last();
    assert_eq!(sent.path, "/api/w/acme/schedules/create");
    assert_eq!(sent.body["schedule"], "0 0 9 * * 1-5");
    assert_eq!(sent.body["is_flow"], true);
    let schedule = windmill.schedule(SCHEDULE).expect("the schedule is stored");
    assert_eq!(
        (
            &schedule["enabled"],
            &schedule["timezone"],
            &schedule["script_path"]
        ),
        (&json!(true), &json!("Europe/Paris"), &json!(FLOW))
    );
    assert_eq!(schedule["args"], json!({"project": "PROJ"}));

    // 3. Listing schedules shows it.
    let listed = ok(
        &alice,
        "windmill_read_actions",
        json!({"action": "list_schedules", "is_flow": true}),
    )
    .await;
    let listed = json_of(&listed);
    let mine = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == SCHEDULE)
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(
        (&mine["schedule"], &mine["enabled"]),
        (&json!("0 0 9 * * 1-5"), &json!(true))
    );
    assert_eq!(windmill.last().query, "is_flow=true");

    // 4. Disabling it (confirmed like any switch of a schedule).
    confirmed(
        &alice,
        "windmill_write_actions",
        json!({"action": "set_schedule_enabled", "path": SCHEDULE, "enabled": false}),
    )
    .await;
    let sent = windmill.last();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        (
            "POST",
            "/api/w/acme/schedules/setenabled/f/standup/weekday_9am"
        )
    );
    assert_eq!(sent.body, json!({"enabled": false}));
    assert_eq!(windmill.schedule(SCHEDULE).unwrap()["enabled"], false);
    let got = ok(
        &alice,
        "windmill_read_actions",
        json!({"action": "get_schedule", "path": SCHEDULE}),
    )
    .await;
    let got = got.structured_content.expect("an object");
    assert_eq!(got["enabled"], false);
    assert_eq!(got["schedule"], "0 0 9 * * 1-5");

    // Every request used the operator's workspace and Alice's own token.
    for r in windmill.received() {
        assert!(r.path.starts_with("/api/w/acme/"), "{r:?}");
        assert_eq!(r.who, "alice");
    }
    for row in gw.audit_rows().await {
        assert!(
            !format!("{row:?}").contains("alice-windmill-token"),
            "{row:?}"
        );
    }
    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_windmill_action_runs_with_the_subjects_own_token() {
    let (windmill, gw) = setup().await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let w = "windmill_write_actions";
    let r = "windmill_read_actions";

    // Scripts: create, read, a new version, list.
    let first = ok(
        &alice,
        w,
        json!({"action": "create_script", "path": SCRIPT, "summary": "Daily report",
               "language": "python3", "content": "def main(day: str):\n    return day",
               "schema": {"type": "object", "properties": {"day": {"type": "string"}}}}),
    )
    .await;
    let first_hash = text_of(&first);
    assert_eq!(
        windmill.script(SCRIPT).unwrap()["hash"],
        first_hash.as_str()
    );
    let got = ok(&alice, r, json!({"action": "get_script", "path": SCRIPT})).await;
    assert_eq!(
        windmill.last().path,
        "/api/w/acme/scripts/get/p/f/reports/daily"
    );
    let got = got.structured_content.expect("an object");
    assert_eq!(
        (&got["hash"], &got["language"]),
        (&json!(first_hash), &json!("python3"))
    );
    // Creating over an existing path is Windmill's own conflict, readable.
    let conflict = failed_text(
        &alice,
        w,
        json!({"action": "create_script", "path": SCRIPT, "summary": "again",
               "language": "python3", "content": "def main(): pass"}),
    )
    .await;
    assert!(
        conflict.contains("HTTP 400") && conflict.contains("Path conflict"),
        "{conflict}"
    );
    let second = ok(
        &alice,
        w,
        json!({"action": "update_script", "path": SCRIPT, "parent_hash": first_hash,
               "summary": "Daily report", "language": "python3",
               "content": "def main(day: str):\n    return {'day': day}"}),
    )
    .await;
    let second_hash = text_of(&second);
    assert_ne!(second_hash, first_hash);
    let versions = windmill.script_versions(SCRIPT);
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["parent_hashes"], json!([first_hash]));
    let stale = failed_text(
        &alice,
        w,
        json!({"action": "update_script", "path": SCRIPT, "parent_hash": first_hash,
               "summary": "Daily report", "language": "python3", "content": "def main(): pass"}),
    )
    .await;
    assert!(stale.contains("lineage must be linear"), "{stale}");
    let listed = ok(
        &alice,
        r,
        json!({"action": "list_scripts", "path_start": "f/reports/"}),
    )
    .await;
    let listed = json_of(&listed);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["hash"], second_hash.as_str());

    // Flows: create, list, get, update.
    ok(
        &alice,
        w,
        json!({"action": "create_flow", "path": FLOW, "summary": "Digest", "value": digest_flow()}),
    )
    .await;
    let flows = json_of(&ok(&alice, r, json!({"action": "list_flows"})).await);
    assert_eq!(flows[0]["path"], FLOW, "{flows}");
    let got = ok(&alice, r, json!({"action": "get_flow", "path": FLOW})).await;
    assert_eq!(
        windmill.last().path,
        "/api/w/acme/flows/get/f/standup/daily_digest"
    );
    let got = got.structured_content.expect("an object");
    assert_eq!(got["value"], digest_flow());
    let version = got["version_id"].clone();
    let mut shorter = digest_flow();
    shorter["modules"].as_array_mut().unwrap().truncate(1);
    let updated = ok(
        &alice,
        w,
        json!({"action": "update_flow", "path": FLOW, "new_path": FLOW,
               "summary": "Digest (fetch only)", "value": shorter}),
    )
    .await;
    assert!(text_of(&updated).contains(FLOW));
    let sent = windmill.last();
    assert_eq!(sent.path, "/api/w/acme/flows/update/f/standup/daily_digest");
    assert_eq!(
        sent.body["path"], FLOW,
        "new_path goes out as the body's `path`"
    );
    assert!(sent.body.get("new_path").is_none(), "{}", sent.body);
    let stored = windmill.flow(FLOW).unwrap();
    assert_eq!(stored["summary"], "Digest (fetch only)");
    assert_eq!(stored["value"], shorter);
    assert_ne!(stored["version_id"], version);

    // Jobs: run a script and a flow (the body is the args object), list, get, result.
    let job = text_of(
        &ok(
            &alice,
            w,
            json!({"action": "run_script", "path": SCRIPT, "args": {"day": "2026-12-01"}}),
        )
        .await,
    );
    let sent = windmill.last();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/api/w/acme/jobs/run/p/f/reports/daily")
    );
    assert_eq!(sent.body, json!({"day": "2026-12-01"}));
    assert_eq!(
        windmill.job(&job).expect("a job")["args"],
        json!({"day": "2026-12-01"})
    );
    let flow_job = text_of(
        &ok(
            &alice,
            w,
            json!({"action": "run_flow", "path": FLOW, "args": {"project": "PROJ"},
                   "scheduled_in_secs": 60}),
        )
        .await,
    );
    let sent = windmill.last();
    assert_eq!(sent.path, "/api/w/acme/jobs/run/f/f/standup/daily_digest");
    assert_eq!(sent.query, "scheduled_in_secs=60");
    assert_eq!(sent.body, json!({"project": "PROJ"}));
    assert_eq!(windmill.job(&flow_job).unwrap()["job_kind"], "flow");
    // No args: Windmill still gets an (empty) args object.
    let bare = text_of(&ok(&alice, w, json!({"action": "run_script", "path": SCRIPT})).await);
    assert_eq!(windmill.last().body, json!({}));
    assert_eq!(windmill.job(&bare).unwrap()["args"], json!({}));

    let jobs = json_of(
        &ok(
            &alice,
            r,
            json!({"action": "list_jobs", "script_path_exact": SCRIPT}),
        )
        .await,
    );
    let ids: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![bare.as_str(), job.as_str()],
        "newest first: {jobs}"
    );
    let queued = ok(&alice, r, json!({"action": "get_job", "id": job})).await;
    assert_eq!(
        windmill.last().query,
        "no_code=true&no_logs=true",
        "the catalog's defaults go out"
    );
    let queued = queued.structured_content.expect("an object");
    assert_eq!(
        (&queued["type"], &queued["running"]),
        (&json!("QueuedJob"), &json!(false))
    );
    let pending = failed_text(&alice, r, json!({"action": "get_job_result", "id": job})).await;
    assert!(
        pending.contains("HTTP 404") && pending.contains("not completed"),
        "{pending}"
    );
    windmill.start_job(&job);
    windmill.complete_job(&job, true, json!({"day": "2026-12-01", "rows": 42}));
    let result = ok(&alice, r, json!({"action": "get_job_result", "id": job})).await;
    assert_eq!(json_of(&result), json!({"day": "2026-12-01", "rows": 42}));
    let done = ok(&alice, r, json!({"action": "get_job", "id": job})).await;
    let done = done.structured_content.expect("an object");
    assert_eq!(
        (&done["type"], &done["success"]),
        (&json!("CompletedJob"), &json!(true))
    );
    let succeeded = json_of(&ok(&alice, r, json!({"action": "list_jobs", "success": true})).await);
    assert_eq!(succeeded.as_array().unwrap().len(), 1, "{succeeded}");

    // Schedules: create, update, get, set enabled, delete (high_risk).
    ok(
        &alice,
        w,
        json!({"action": "create_schedule", "path": SCHEDULE, "schedule": "0 0 9 * * 1-5",
               "timezone": "Europe/Paris", "script_path": FLOW, "is_flow": true}),
    )
    .await;
    assert_eq!(
        windmill.last().body["args"],
        json!({}),
        "args defaults to {{}}"
    );
    ok(
        &alice,
        w,
        json!({"action": "update_schedule", "path": SCHEDULE, "schedule": "0 30 8 * * 1-5",
               "timezone": "America/New_York", "args": {"project": "OPS"}}),
    )
    .await;
    let sent = windmill.last();
    assert_eq!(
        sent.path,
        "/api/w/acme/schedules/update/f/standup/weekday_9am"
    );
    let got = ok(
        &alice,
        r,
        json!({"action": "get_schedule", "path": SCHEDULE}),
    )
    .await;
    let got = got.structured_content.expect("an object");
    assert_eq!(
        (&got["schedule"], &got["timezone"], &got["args"]),
        (
            &json!("0 30 8 * * 1-5"),
            &json!("America/New_York"),
            &json!({"project": "OPS"})
        )
    );
    ok(
        &alice,
        w,
        json!({"action": "set_schedule_enabled", "path": SCHEDULE, "enabled": false}),
    )
    .await;
    assert_eq!(windmill.schedule(SCHEDULE).unwrap()["enabled"], false);
    confirmed(
        &alice,
        w,
        json!({"action": "delete_schedule", "path": SCHEDULE}),
    )
    .await;
    let sent = windmill.last();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        (
            "DELETE",
            "/api/w/acme/schedules/delete/f/standup/weekday_9am"
        )
    );
    assert!(windmill.schedule(SCHEDULE).is_none());

    // Archiving a script is high_risk too; an archived script no longer runs.
    let before = windmill.received().len();
    let ask = ok(
        &alice,
        w,
        json!({"action": "archive_script", "path": SCRIPT}),
    )
    .await;
    assert_eq!(
        windmill.received().len(),
        before,
        "nothing is sent before the confirmation"
    );
    let token = ask.structured_content.unwrap()["confirm"].clone();
    ok(
        &alice,
        w,
        json!({"action": "archive_script", "path": SCRIPT, "confirm": token}),
    )
    .await;
    assert_eq!(
        windmill.last().path,
        "/api/w/acme/scripts/archive/p/f/reports/daily"
    );
    assert_eq!(windmill.script(SCRIPT).unwrap()["archived"], true);
    let gone = failed_text(&alice, w, json!({"action": "run_script", "path": SCRIPT})).await;
    assert!(gone.contains("HTTP 404"), "{gone}");

    for r in windmill.received() {
        assert_eq!(r.who, "alice", "{r:?}");
    }
    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn windmill_refusals_errors_pages_and_rate_limits() {
    let (windmill, gw) = setup().await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let w = "windmill_write_actions";
    let r = "windmill_read_actions";
    ok(
        &alice,
        w,
        json!({"action": "create_flow", "path": FLOW, "summary": "Digest", "value": digest_flow()}),
    )
    .await;

    // Flows that do not follow OpenFlow get Windmill's 400, readable.
    let unknown_type = failed_text(
        &alice,
        w,
        json!({"action": "create_flow", "path": "f/standup/bad", "summary": "Bad",
               "value": {"modules": [{"id": "a", "value": {"type": "teleport"}}]}}),
    )
    .await;
    assert!(
        unknown_type.contains("HTTP 400")
            && unknown_type.contains("unknown module type 'teleport'"),
        "{unknown_type}"
    );
    let no_content = failed_text(
        &alice,
        w,
        json!({"action": "create_flow", "path": "f/standup/bad", "summary": "Bad",
               "value": {"modules": [{"id": "a", "value": {"type": "rawscript", "language": "bun", "input_transforms": {}}}]}}),
    )
    .await;
    assert!(
        no_content.contains("missing field `content`"),
        "{no_content}"
    );
    let no_modules = failed_text(
        &alice,
        w,
        json!({"action": "create_flow", "path": "f/standup/bad", "summary": "Bad",
               "value": {"same_worker": true}}),
    )
    .await;
    assert!(no_modules.contains("missing `modules`"), "{no_modules}");
    let nested = failed_text(
        &alice,
        w,
        json!({"action": "create_flow", "path": "f/standup/bad", "summary": "Bad",
               "value": {"modules": [{"id": "loop", "value": {"type": "forloopflow",
                   "iterator": {"type": "javascript", "expr": "[1]"}, "skip_failures": false,
                   "modules": [{"id": "loop", "value": {"type": "identity"}}]}}]}}),
    )
    .await;
    assert!(
        nested.contains("module id 'loop' is used twice"),
        "{nested}"
    );
    // Beyond the readable checks, the whole OpenFlow schema has the last word
    // (`sleep` is an InputTransform, not a number).
    let sleepy = failed_text(
        &alice,
        w,
        json!({"action": "create_flow", "path": "f/standup/bad", "summary": "Bad",
               "value": {"modules": [{"id": "a", "sleep": 5, "value": {"type": "identity"}}]}}),
    )
    .await;
    assert!(
        sleepy.contains("HTTP 400")
            && sleepy.contains("does not follow OpenFlow")
            && sleepy.contains("/value/modules/0/sleep"),
        "{sleepy}"
    );
    assert!(windmill.flow("f/standup/bad").is_none());
    // The fake refuses what openflow.yaml itself refuses.
    for value in [
        json!({"modules": [{"id": "a", "value": {"type": "teleport"}}]}),
        json!({"modules": [{"id": "a", "value": {"type": "rawscript", "language": "bun", "input_transforms": {}}}]}),
        json!({"same_worker": true}),
        json!({"modules": [{"id": "a", "sleep": 5, "value": {"type": "identity"}}]}),
    ] {
        let flow = json!({"summary": "Bad", "value": value});
        assert!(!openflow_problems(&flow).is_empty(), "{flow}");
    }

    // Schedules: 6-field cron, IANA timezone, an existing target.
    let schedule = |cron: &str, tz: &str, target: &str| {
        json!({"action": "create_schedule", "path": SCHEDULE, "schedule": cron, "timezone": tz,
               "script_path": target, "is_flow": true})
    };
    let five = failed_text(&alice, w, schedule("0 9 * * 1-5", "Europe/Paris", FLOW)).await;
    assert!(five.contains("expected 6 fields"), "{five}");
    let bad_cron = failed_text(&alice, w, schedule("0 0 25 * * 1-5", "Europe/Paris", FLOW)).await;
    assert!(bad_cron.contains("invalid cron"), "{bad_cron}");
    let tz = failed_text(&alice, w, schedule("0 0 9 * * 1-5", "Mars/Olympus", FLOW)).await;
    assert!(tz.contains("invalid timezone"), "{tz}");
    let target = failed_text(
        &alice,
        w,
        schedule("0 0 9 * * 1-5", "UTC", "f/standup/missing"),
    )
    .await;
    assert!(target.contains("does not exist"), "{target}");
    assert!(windmill.schedule(SCHEDULE).is_none());

    // Not found, in Windmill's words.
    let missing = failed_text(
        &alice,
        r,
        json!({"action": "get_flow", "path": "f/standup/nope"}),
    )
    .await;
    assert!(
        missing.contains("HTTP 404") && missing.contains("flow not found at path f/standup/nope"),
        "{missing}"
    );

    // Pages: Windmill pages with page/per_page over a plain array.
    for n in 1..=3 {
        ok(
            &alice,
            w,
            json!({"action": "create_schedule", "path": format!("f/standup/s{n}"),
                   "schedule": format!("0 0 {n} * * *"), "timezone": "UTC",
                   "script_path": FLOW, "is_flow": true}),
        )
        .await;
    }
    let mut seen = Vec::new();
    for page in 1..=4 {
        let listed = json_of(
            &ok(
                &alice,
                r,
                json!({"action": "list_schedules", "page": page, "per_page": 1}),
            )
            .await,
        );
        assert_eq!(windmill.last().query, format!("page={page}&per_page=1"));
        seen.extend(
            listed
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["path"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen, ["f/standup/s1", "f/standup/s2", "f/standup/s3"]);

    // 429: a short Retry-After is waited out, a long one is reported.
    windmill.throttle(1, 1);
    let flows = json_of(&ok(&alice, r, json!({"action": "list_flows"})).await);
    assert_eq!(flows[0]["path"], FLOW);
    assert_eq!(windmill.throttled(), 1);
    windmill.throttle(1, 3600);
    let limited = call(&alice, r, json!({"action": "list_flows"}))
        .await
        .unwrap();
    assert_eq!(limited.is_error, Some(true));
    assert!(
        text_of(&limited).contains("rate_limited"),
        "{}",
        text_of(&limited)
    );
    assert_eq!(
        limited.structured_content.unwrap()["retry_after"],
        json!(3600)
    );

    // A caller may name another workspace; Alice is not a member of it.
    let other = call(
        &alice,
        r,
        json!({"action": "list_flows", "workspace": "elsewhere"}),
    )
    .await
    .unwrap();
    assert_eq!(windmill.last().path, "/api/w/elsewhere/flows/list");
    assert_eq!(other.is_error, Some(true));

    // Bob: no credential, then a token Windmill refuses: auth_required both times.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let before = windmill.received().len();
    let answer = call(&bob, r, json!({"action": "list_flows"}))
        .await
        .unwrap();
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(answer.structured_content.unwrap()["auth_required"], true);
    assert_eq!(
        windmill.received().len(),
        before,
        "nothing sent without a credential"
    );
    store_credential(
        &gw,
        "bob@example.com",
        "windmill",
        CredentialKind::Token,
        "not-bobs-token",
    )
    .await;
    let answer = call(&bob, r, json!({"action": "list_flows"}))
        .await
        .unwrap();
    let text = text_of(&answer);
    assert_eq!(
        answer.structured_content.unwrap()["auth_required"],
        true,
        "{text}"
    );
    assert!(text.contains("refused your credential"), "{text}");
    assert!(!text.contains("not-bobs-token"));
    // With his own token Bob acts as himself; high_risk is beyond his access.
    store_credential(
        &gw,
        "bob@example.com",
        "windmill",
        CredentialKind::Token,
        "bob-windmill-token",
    )
    .await;
    ok(&bob, r, json!({"action": "list_flows"})).await;
    assert_eq!(windmill.last().who, "bob");
    let err = call(
        &bob,
        w,
        json!({"action": "delete_schedule", "path": "f/standup/s1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(support::reason_of(&err), "risk_not_allowed");
    assert!(windmill.schedule("f/standup/s1").is_some());

    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        assert!(
            !row.contains("alice-windmill-token")
                && !row.contains("bob-windmill-token")
                && !row.contains("not-bobs-token"),
            "{row}"
        );
    }
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}

/// `mcpgate catalog check` for this catalog alone: every action, parameter and
/// body field exists in the Windmill spec.
#[test]
fn the_windmill_catalog_follows_the_spec() {
    use mcpgate::native::{catalog, spec, spec_check};
    let (file, text) = catalog::shipped("windmill").expect("windmill is shipped");
    let catalog = catalog::Catalog::parse(text, file).unwrap();
    let specs = support::repo().join("../shared/specs");
    let doc =
        spec::read_document(&specs.join(spec_check::spec_of("windmill").unwrap()[0])).unwrap();
    let problems = spec_check::check(&catalog, file, &spec::operations(&doc));
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(catalog.actions.len(), 20);
    // The catalog check must be able to fail: an invented operation does not pass.
    let invented = catalog::Catalog::parse(
        &text.replace(
            "/w/{workspace}/schedules/delete/{path}",
            "/w/{workspace}/flows/delete/{path}",
        ),
        file,
    )
    .unwrap();
    assert!(!spec_check::check(&invented, file, &spec::operations(&doc)).is_empty());
}
