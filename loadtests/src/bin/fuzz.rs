//! A mutation fuzzer for every parser at mcpgate's edges, on stable Rust
//! (cargo fuzz needs nightly). Black-box: each target's corpus
//! (`loadtests/fuzz/corpus/<target>/`, seeded from the tests and the shipped
//! files) is mutated — bit flips, byte edits, deletions, duplications,
//! splices, target-specific tokens — and every input runs under
//! `catch_unwind`. A panic, or one input taking longer than the per-input
//! limit, is a finding: the input is written to `loadtests/fuzz/crashes/`
//! and the run fails. Findings, once fixed, move to
//! `loadtests/fuzz/regressions/<target>/`, which `--replay` runs (CI does).
//!
//! ```sh
//! target/release/fuzz --seconds 5                 # every target, 5 s each (CI)
//! target/release/fuzz --target config --seconds 600
//! target/release/fuzz --replay                    # the kept findings
//! target/release/fuzz --pii-scaling               # 1 MB adversarial vs typical
//! ```

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use mcpgate::catalog::ServiceCatalog;
use mcpgate::config::Config;
use mcpgate::policy::decide::{Rules, decide};
use mcpgate::principal::Principal;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// One target (default: every target in turn).
    #[arg(long)]
    target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Replay the kept findings (`fuzz/regressions/`) and the corpus, then stop.
    #[arg(long)]
    replay: bool,
    /// Check the PII scan stays linear: a 1 MB adversarial input within 10×
    /// the time of a 1 MB typical one.
    #[arg(long)]
    pii_scaling: bool,
    /// The fuzz directory (corpus, crashes, regressions).
    #[arg(long, default_value = "loadtests/fuzz")]
    dir: PathBuf,
    /// Seed of the mutation RNG (a run is reproducible with the same seed).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

/// A longer single execution than this is a finding (a hang or blow-up).
const SLOW_INPUT: Duration = Duration::from_secs(2);

const TARGETS: [&str; 11] = [
    "mcp_request",
    "confirm_token",
    "exchange_form",
    "declaration",
    "job_yml",
    "config",
    "catalog",
    "openapi",
    "hooks",
    "pii",
    "windmill",
];

/// Tokens worth inserting: the grammar of what the targets read.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\n",
    "  ",
    "- ",
    "*",
    "?",
    "\\",
    "\\u0000",
    "null",
    "true",
    "-1",
    "1e309",
    "%",
    "%zz",
    "&",
    "=",
    "+",
    "mgc1.",
    "<PERSON_",
    ">",
    "person-",
    "@pseudonym.invalid",
    "@example.com",
    "read",
    "write",
    "high_risk",
    "action",
    "confirm",
    "&&",
    "||",
    "args.",
    "size(",
    "matches(",
    "!",
    "{{",
    "}}",
    "\u{feff}",
    "\u{202e}",
    "é",
    "kind: native",
    "kind: mcp",
    "---",
    "&a",
    "*a",
    "!!binary",
    "0x",
    "ephemeral-script",
];

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                data.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                data.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let copy = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, copy);
            }
            5 | 6 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            7 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(data.len() + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if len > 1 => data.truncate(rng.below(len)),
            _ => {}
        }
    }
    data.truncate(1 << 16);
    data
}

/// Everything the targets share: a config, catalogs, a runtime and a store.
struct Fixture {
    config: Config,
    catalogs: BTreeMap<String, Arc<ServiceCatalog>>,
    principal: Principal,
    known: HashSet<String>,
    runtime: tokio::runtime::Runtime,
    pii: mcpgate::pii::Pii,
    confirmation_key: mcpgate::write_safety::ConfirmationKey,
    windmill: WindmillFake,
    /// Verifications that succeeded on fuzzed answers (each checked
    /// against what the answers said).
    grants: std::sync::atomic::AtomicU64,
    _store: tempfile::TempDir,
}

const FIXTURE_CONFIG: &str = "\
policy:
  confirm: [\"svc.change\"]
  classify:
    - match: \"svc.query\"
      sql: sql
services:
  svc: { kind: mcp, command: [x] }
  direct: { kind: mcp, command: [x], expose: tools }
users:
  - email: alice@example.com
    access: { \"*\": high_risk }
";

impl Fixture {
    fn new() -> anyhow::Result<Fixture> {
        let config =
            Config::parse(FIXTURE_CONFIG, "fixture.yaml").map_err(|e| anyhow::anyhow!("{e}"))?;
        let object = |v: Value| match v {
            Value::Object(m) => Arc::new(m),
            _ => unreachable!("a JSON object literal"),
        };
        let schema = object(json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "sql": {"type": "string"}, "text": {"type": "string"}},
        }));
        let tool = |name: &str, annotations: ToolAnnotations| {
            Tool::new(name.to_owned(), format!("does {name}"), schema.clone())
                .with_annotations(annotations)
        };
        let tools = [
            tool("look", ToolAnnotations::new().read_only(true)),
            tool("query", ToolAnnotations::new().read_only(true)),
            tool("change", ToolAnnotations::new()),
            tool("wipe", ToolAnnotations::new().destructive(true)),
        ];
        let catalogs = ["svc", "direct"]
            .into_iter()
            .map(|s| {
                let built =
                    ServiceCatalog::build(s, &config.services[s], &config.policy, 1, &tools);
                (s.to_owned(), Arc::new(built))
            })
            .collect();
        let user = Arc::new(
            config
                .user("alice@example.com")
                .context("fixture user")?
                .clone(),
        );
        let principal = Principal {
            credential_id: "tok".into(),
            subject: user.email.clone(),
            actor: user.email.clone(),
            user,
            grant: None,
            scope_cap: None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let store = tempfile::tempdir()?;
        let mut store_config = Config::default();
        store_config.data_dir = store.path().to_owned();
        let pool = runtime
            .block_on(mcpgate::storage::open(store.path()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let master = mcpgate::keys::MasterKey::for_config(&store_config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let pii = mcpgate::pii::Pii::new(Default::default(), &master, pool)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let confirmation_key = mcpgate::write_safety::ConfirmationKey::from_master(&master);
        let windmill = runtime.block_on(WindmillFake::start())?;
        Ok(Fixture {
            config,
            catalogs,
            principal,
            known: ["jira", "slack", "bigquery", "windmill"]
                .into_iter()
                .map(String::from)
                .collect(),
            runtime,
            pii,
            confirmation_key,
            windmill,
            grants: Default::default(),
            _store: store,
        })
    }

    /// Run `target` on `input`; `Err` is a violated property (a panic is
    /// caught by the caller).
    fn run(&self, target: &str, input: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(input);
        match target {
            "mcp_request" => self.mcp_request(input),
            "confirm_token" => {
                let binding = mcpgate::write_safety::Binding {
                    subject: "alice@example.com",
                    actor: "alice@example.com",
                    tool: "svc_write_actions",
                    action: "change",
                    args_sha256: "00",
                    policy_version: "v1",
                };
                if mcpgate::write_safety::check(&self.confirmation_key, &text, &binding).is_ok() {
                    return Err("a forged confirmation token was accepted".into());
                }
                Ok(())
            }
            "exchange_form" => {
                let _ = mcpgate::oauth::parse_form(input);
                Ok(())
            }
            "declaration" => {
                let _ = mcpgate::delegation::declaration::parse_declaration(&text, &self.known);
                Ok(())
            }
            "job_yml" => {
                let _ =
                    mcpgate::delegation::declaration::parse_job_file(&text, "job.yml", &self.known);
                Ok(())
            }
            "config" => {
                let _ = Config::parse(&text, "fuzz.yaml");
                Ok(())
            }
            "catalog" => {
                if let Ok(catalog) = mcpgate::native::catalog::Catalog::parse(&text, "fuzz.yaml") {
                    let _ = catalog.classify_rules("svc");
                    let _ = catalog.tools(&BTreeMap::new());
                }
                Ok(())
            }
            "openapi" => {
                let doc: Option<Value> = serde_json::from_slice(input)
                    .ok()
                    .or_else(|| serde_yaml::from_str(&text).ok());
                if let Some(doc) = doc {
                    let _ = mcpgate::native::openapi_import::import(&doc, "svc", "fuzz");
                }
                Ok(())
            }
            "hooks" => self.hooks(&text),
            "pii" => self.pii(&text),
            "windmill" => self.windmill(input),
            other => Err(format!("unknown target {other}")),
        }
    }

    /// The request path as the gateway parses it: the JSON-RPC message, the
    /// tool name, the `confirm` argument, and the decision on the arguments.
    fn mcp_request(&self, input: &[u8]) -> Result<(), String> {
        let _ = serde_json::from_slice::<rmcp::model::ClientJsonRpcMessage>(input);
        let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(input) else {
            return Ok(());
        };
        let params = message.get("params").and_then(Value::as_object);
        let tool = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("svc_read_actions");
        let mut arguments: JsonObject = params
            .and_then(|p| p.get("arguments"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let token = mcpgate::write_safety::take_token(&mut arguments);
        let rules = Rules {
            config: &self.config,
            catalog_rules: &[],
        };
        let lookup = |s: &str| self.catalogs.get(s).cloned();
        let decided = decide(&rules, &self.principal, &lookup, tool, &arguments);
        if let Ok(decided) = decided {
            // What passed validation must be what the catalog has.
            let catalog = &self.catalogs[&decided.service];
            if !catalog.actions.contains_key(&decided.action) {
                return Err(format!("decided an unknown action {}", decided.action));
            }
            if decided.arguments.contains_key("action")
                && catalog.expose == mcpgate::config::Expose::Actions
            {
                return Err("the action selector reached the upstream's arguments".into());
            }
        }
        if let Some(token) = token {
            let digest = mcpgate::audit::canonical_digest(&arguments);
            let binding = mcpgate::write_safety::Binding {
                subject: "alice@example.com",
                actor: "alice@example.com",
                tool,
                action: "change",
                args_sha256: &digest,
                policy_version: &self.config.policy_version,
            };
            if mcpgate::write_safety::check(&self.confirmation_key, &token, &binding).is_ok() {
                return Err("a forged confirmation token was accepted".into());
            }
        }
        Ok(())
    }

    /// Hook files (with their CEL `when:`), then every hook run on a call.
    fn hooks(&self, text: &str) -> Result<(), String> {
        let Ok(hooks) =
            mcpgate::hooks::load::parse(text, "fuzz.yaml", mcpgate::hooks::Layer::Company)
        else {
            return Ok(());
        };
        let set = mcpgate::hooks::HookSet::new(hooks);
        let facts = mcpgate::hooks::CallFacts {
            tool: "svc_write_actions",
            service: "svc",
            action: "change",
            risk: "write",
            subject: "alice@example.com",
            actor: "alice@example.com",
        };
        let mut arguments: JsonObject = serde_json::from_value(json!({
            "text": "the secret is 42", "n": 7, "to": ["#finance"], "body": {"a": [1, 2]}
        }))
        .unwrap_or_default();
        let _ = set.run_pre(&facts, &mut arguments, Duration::from_millis(50));
        let mut result = CallToolResult::success(vec![ContentBlock::text("x".repeat(100))]);
        let _ = set.run_post(&facts, &arguments, &mut result, Duration::from_millis(50));
        Ok(())
    }

    /// The detectors and the JSON walker on a result, then rehydration of
    /// what came out: no input value may survive pseudonymization as a
    /// detected e-mail address, and rehydration must not fail on our own
    /// pseudonyms.
    fn pii(&self, text: &str) -> Result<(), String> {
        let _ = mcpgate::pii::detect::scan(text, &[]);
        let mut result = CallToolResult::success(vec![ContentBlock::text(text.to_owned())]);
        result.structured_content = serde_json::from_str::<Value>(text)
            .ok()
            .or_else(|| Some(json!({ "result": text })));
        let subject = "alice@example.com";
        let scanned = self
            .runtime
            .block_on(self.pii.pseudonymize(subject, "svc", &mut result));
        if scanned.is_err() {
            return Ok(());
        }
        let out = serde_json::to_value(&result).map_err(|e| e.to_string())?;
        let mut arguments = JsonObject::new();
        arguments.insert("echo".into(), out);
        match self
            .runtime
            .block_on(self.pii.rehydrate(subject, "svc", &mut arguments))
        {
            Ok(_) => Ok(()),
            Err(refusal) if refusal.reason == mcpgate::domain::Reason::UnknownPseudonym => {
                // The input itself can carry pseudonym-shaped text we never issued.
                Ok(())
            }
            Err(refusal) => Err(format!("rehydrating our own output failed: {refusal}")),
        }
    }

    /// Windmill's answers as the verifier reads them: the input is split
    /// into the whoami answer and the job answer. A verification may only
    /// succeed if those answers say the job runs, as this user.
    fn windmill(&self, input: &[u8]) -> Result<(), String> {
        let split = input
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(input.len() / 2);
        let (whoami, job) = (&input[..split], &input[(split + 1).min(input.len())..]);
        *self.windmill.answers.lock().unwrap() = (whoami.to_vec(), job.to_vec());
        let instance = mcpgate::delegation::store::Instance {
            name: "prod".into(),
            base_url: self.windmill.base_url.clone(),
            workspace: "finance".into(),
            allowed_flows: None,
        };
        let claim = mcpgate::delegation::windmill::JobClaim {
            workspace: "finance".into(),
            job_id: JOB_ID.into(),
            flow_job_id: None,
            job_token: job_token(),
        };
        let verified = self
            .runtime
            .block_on(self.windmill.client.verify(&instance, &claim));
        let Ok(verified) = verified else {
            return Ok(());
        };
        self.grants
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let whoami: Value =
            serde_json::from_slice(whoami).map_err(|_| "a grant from an unparsable whoami")?;
        let job: Value =
            serde_json::from_slice(job).map_err(|_| "a grant from an unparsable job")?;
        // E-mail addresses compare without case, as the verifier does.
        let same_user = whoami["email"]
            .as_str()
            .is_some_and(|e| e.eq_ignore_ascii_case(&verified.owner_email));
        let running = job["running"] == json!(true) && job["id"] == json!(JOB_ID);
        let preview = matches!(job["job_kind"].as_str(), Some("preview" | "flowpreview"));
        if !same_user || !running || preview {
            return Err(format!(
                "verified a job the answers do not support: {verified:?} from {whoami} / {job}"
            ));
        }
        Ok(())
    }
}

const JOB_ID: &str = "018f5f0a-0000-7000-8000-000000000001";

fn job_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    let claims = json!({
        "email": "alice@example.com", "username": "alice", "job_id": JOB_ID,
        "workspace_id": "finance", "exp": exp, "label": "ephemeral-script", "scopes": null,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("jwt_{header}.{payload}.c2lnbmF0dXJl")
}

/// A Windmill that answers whatever the fuzzer gives it.
struct WindmillFake {
    base_url: String,
    answers: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
    client: mcpgate::delegation::windmill::WindmillClient,
}

impl WindmillFake {
    async fn start() -> anyhow::Result<WindmillFake> {
        use axum::routing::get;
        let answers: Arc<Mutex<(Vec<u8>, Vec<u8>)>> = Arc::default();
        let (whoami, job) = (answers.clone(), answers.clone());
        let json = |body: Vec<u8>| ([("content-type", "application/json")], body);
        let app = axum::Router::new()
            .route(
                "/api/w/finance/users/whoami",
                get(move || {
                    let body = whoami.lock().unwrap().0.clone();
                    async move { json(body) }
                }),
            )
            .route(
                "/api/w/finance/jobs_u/get/{id}",
                get(move || {
                    let body = job.lock().unwrap().1.clone();
                    async move { json(body) }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WindmillFake {
            base_url,
            answers,
            client: mcpgate::delegation::windmill::WindmillClient::new(Duration::from_secs(2), 64),
        })
    }
}

fn read_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| Some((e.path(), std::fs::read(e.path()).ok()?)))
        .collect();
    out.sort();
    out
}

/// One execution, guarded: `Err` describes a finding.
fn execute(fixture: &Fixture, target: &str, input: &[u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| fixture.run(target, input)));
    let took = started.elapsed();
    match outcome {
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            Err(format!("panicked: {what}"))
        }
        Ok(Err(violation)) => Err(violation),
        Ok(Ok(())) if took > SLOW_INPUT => Err(format!("took {took:?}")),
        Ok(Ok(())) => Ok(took),
    }
}

fn keep_finding(dir: &Path, target: &str, input: &[u8], why: &str) -> anyhow::Result<PathBuf> {
    use sha2::Digest;
    let crashes = dir.join("crashes").join(target);
    std::fs::create_dir_all(&crashes)?;
    let name = hex::encode(&sha2::Sha256::digest(input)[..8]);
    let path = crashes.join(name);
    std::fs::write(&path, input)?;
    eprintln!("{target}: FINDING {why}\n  kept in {}", path.display());
    Ok(path)
}

fn pii_scaling(fixture: &Fixture) -> anyhow::Result<()> {
    const SIZE: usize = 1 << 20;
    let typical = {
        let record = r#"{"key":"PROJ-12","fields":{"summary":"Quarterly close","reporter":{"displayName":"Marie Curie","emailAddress":"marie.curie@example.com"},"description":"Call +33 1 23 45 67 89 before Friday."}},"#;
        let mut s = String::from("[");
        while s.len() < SIZE {
            s.push_str(record);
        }
        s.push_str("{}]");
        s
    };
    // What stresses detectors: endless almost-addresses, digit runs and
    // separators that never complete a match.
    let adversarial: String = "a.a.a@a-".repeat(SIZE / 16) + &"1 2-3.4 ".repeat(SIZE / 16);
    let time = |text: &str| -> anyhow::Result<Duration> {
        let started = Instant::now();
        fixture
            .run("pii", text.as_bytes())
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(started.elapsed())
    };
    let typical_time = time(&typical)?;
    let adversarial_time = time(&adversarial)?;
    let ratio = adversarial_time.as_secs_f64() / typical_time.as_secs_f64().max(1e-9);
    println!(
        "pii scaling: 1 MB typical {typical_time:?}, 1 MB adversarial {adversarial_time:?} (ratio {ratio:.2}, limit 10)"
    );
    if ratio > 10.0 {
        bail!("the PII scan is super-linear on adversarial input");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Findings are reported by the fuzzer, not by the default panic printer.
    std::panic::set_hook(Box::new(|_| {}));
    let fixture = Fixture::new()?;
    if args.pii_scaling {
        return pii_scaling(&fixture);
    }
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("unknown target '{t}'; one of {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    let mut findings = Vec::new();
    println!("| target | corpus | executions | exec/s | slowest ms | findings |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (index, target) in targets.iter().enumerate() {
        let corpus: Vec<Vec<u8>> = read_dir(&args.dir.join("corpus").join(target))
            .into_iter()
            .map(|(_, data)| data)
            .collect();
        let regressions = read_dir(&args.dir.join("regressions").join(target));
        if corpus.is_empty() {
            bail!("no corpus for {target} in {}", args.dir.display());
        }
        let mut found = 0;
        let mut slowest = Duration::ZERO;
        let mut executions = 0u64;
        // Every kept finding and every seed first: they must stay clean.
        for (path, input) in regressions
            .iter()
            .map(|(p, d)| (p.display().to_string(), d))
            .chain(corpus.iter().map(|d| ("seed".to_owned(), d)))
        {
            executions += 1;
            match execute(&fixture, target, input) {
                Ok(took) => slowest = slowest.max(took),
                Err(why) => {
                    found += 1;
                    findings.push(keep_finding(
                        &args.dir,
                        target,
                        input,
                        &format!("{why} ({path})"),
                    )?);
                }
            }
        }
        let started = Instant::now();
        let mut rng = Rng(args.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        while !args.replay && started.elapsed() < Duration::from_secs(args.seconds) {
            let parent = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, parent, &corpus);
            executions += 1;
            match execute(&fixture, target, &input) {
                Ok(took) => slowest = slowest.max(took),
                Err(why) => {
                    found += 1;
                    findings.push(keep_finding(&args.dir, target, &input, &why)?);
                    if found >= 5 {
                        break;
                    }
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        println!(
            "| {target} | {} | {executions} | {:.0} | {:.1} | {found} |",
            corpus.len(),
            if args.replay {
                0.0
            } else {
                executions as f64 / seconds
            },
            slowest.as_secs_f64() * 1000.0
        );
    }
    if targets.contains(&"windmill") {
        println!(
            "\nwindmill: {} verification(s) succeeded on fuzzed answers, each supported by them",
            fixture.grants.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    if !findings.is_empty() {
        bail!(
            "{} finding(s); inputs kept under {}",
            findings.len(),
            args.dir.join("crashes").display()
        );
    }
    Ok(())
}
