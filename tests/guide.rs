//! `docs/guides/windmill-jobs.md` is tested: its files are written out, every
//! command in its `sh` blocks runs (the Windmill URL pointed at the fake
//! Windmill), and its Python compiles.

mod support;

use std::process::Command;

use support::fake_windmill::FakeWindmill;
use support::{python, repo};

/// (info string, body) of each fenced block.
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => out.push(current.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_and_command_in_the_windmill_guide_works() {
    let guide = std::fs::read_to_string(repo().join("docs/guides/windmill-jobs.md")).unwrap();
    let wm = FakeWindmill::start("finance").await;
    wm.add_user("ops", "ops@example.com");
    let windmill_token = wm.mint_token(
        "ops",
        "00000000-0000-0000-0000-000000000001",
        "finance",
        3600,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut commands = 0;
    for (info, body) in blocks(&guide) {
        let mut words = info.split_whitespace();
        match (words.next(), words.next()) {
            (Some("yaml"), Some(file)) => {
                let path = dir.path().join(file);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, &body).unwrap();
            }
            (Some("python"), _) => {
                let out = Command::new(python())
                    .args(["-c", "import sys; compile(sys.argv[1], 'guide', 'exec')"])
                    .arg(&body)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{body}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            (Some("sh"), _) => {
                for line in body.lines().filter(|l| !l.trim().is_empty()) {
                    let line = line.replace("https://windmill.example.com", &wm.base_url);
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let mut cmd = match words[0] {
                        "mcpgate" => Command::new(env!("CARGO_BIN_EXE_mcpgate")),
                        "python" => {
                            let mut c = Command::new(python());
                            c.env("WINDMILL_TOKEN", &windmill_token);
                            c
                        }
                        other => panic!("the guide runs an untested program: {other}"),
                    };
                    let script_args: Vec<String> = words[1..]
                        .iter()
                        .map(|w| {
                            if w.starts_with("windmill/") {
                                repo().join(w).display().to_string()
                            } else {
                                (*w).to_owned()
                            }
                        })
                        .collect();
                    let out = cmd
                        .args(&script_args)
                        .current_dir(dir.path())
                        .env("MCPGATE_CONFIG", dir.path().join("config.yaml"))
                        .env("MCPGATE_DATA_DIR", dir.path().join("data"))
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "guide command failed: {line}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    commands += 1;
                }
            }
            _ => {}
        }
    }
    assert!(commands >= 8, "only {commands} commands found in the guide");
    assert!(wm.schedule("f/mcpgate_jobs/nightly_pnl_rollup").is_some());
}
