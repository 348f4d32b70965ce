//! The `mcpgate` command line.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::audit::{self, AuditFilter};
use crate::cli_operator::{
    self, ApprovalCommand, CredentialsCommand, DelegationCommand, GrantsCommand, JobCommand,
    SecretsCommand, WindmillCommand,
};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::{storage, tokens};

#[derive(Debug, Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "A self-hosted MCP gateway: one governed endpoint for AI clients and workflow engines."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// YAML config file. Without one, built-in defaults are used
    /// (listen 127.0.0.1:8642, data in ./mcpgate-data, no services).
    #[arg(long, global = true, env = "MCPGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override `listen` (address:port).
    #[arg(long, global = true, env = "MCPGATE_LISTEN")]
    pub listen: Option<String>,
    /// Override `data_dir` (SQLite database and state).
    #[arg(long, global = true, env = "MCPGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Override `database`: a PostgreSQL URL shared by several gateways.
    #[arg(
        long,
        global = true,
        env = "MCPGATE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: MCP at /mcp, health at /health.
    Serve,
    /// Check the config file and exit (errors name file:line:column).
    Check,
    /// Manage gateway API tokens (Bearer credentials for /mcp).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The Delegated Access feature flag.
    #[command(subcommand)]
    Delegation(DelegationCommand),
    /// Windmill instances allowed to delegate.
    #[command(subcommand)]
    Windmill(WindmillCommand),
    /// Admin approvals of high_risk for a delegation.
    #[command(subcommand)]
    Approval(ApprovalCommand),
    /// Delegation grants: list and revoke.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// `.windmill/job.yml` files.
    #[command(subcommand)]
    Job(JobCommand),
    /// Service credentials kept at the gateway (sealed; never shown).
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Key rotation for stored secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Native service catalogs: check them against their specs, import new ones.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Sign-in for AI clients: one-time sign-in links, people's authorized clients.
    #[command(subcommand)]
    Oauth(OauthCommand),
}

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Mint a one-time sign-in link for a configured person (for installs
    /// without a company IdP); print it once.
    SigninLink {
        /// The person's email, as in the config's `users:`.
        user: String,
        /// How long the link may be used, e.g. 15m, 1h.
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
    /// The clients a person authorized (live only).
    Clients { user: String },
    /// Revoke a person's authorization of a client: its tokens are refused
    /// from the next request on.
    Revoke {
        user: String,
        #[arg(long)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Check every shipped catalog against its service's published spec:
    /// each action's method, path and parameters must exist there.
    Check {
        /// The directory of specs (`jira/openapi-subset.json`, …).
        #[arg(long, env = "MCPGATE_SPECS", default_value = "../shared/specs")]
        specs: PathBuf,
    },
    /// Write a first catalog for a service from its OpenAPI 3 (or Swagger 2)
    /// document; review names and risk classes afterwards.
    ImportOpenapi {
        /// The OpenAPI document (JSON or YAML).
        spec: PathBuf,
        /// The service's name in the catalog.
        #[arg(long)]
        service: String,
        /// Where to write the catalog (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a configured user and print it once.
    Create {
        /// The user's email, as in the config's `users:`.
        #[arg(long)]
        user: String,
        /// A label to recognise the token by.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 30d, 12h. Default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Revoke a token by id; the next request with it is refused.
    Revoke { id: String },
    /// List tokens (ids and owners; never secrets).
    List,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show audit rows, oldest first.
    Query {
        /// Only rows where this person is the subject.
        #[arg(long)]
        subject: Option<String>,
        /// Only rows at or after this time (RFC 3339, e.g. 2026-11-24T00:00:00Z) or
        /// this long ago (e.g. 1h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many rows (the newest).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check the log against its signed checkpoints and print the first row
    /// where it breaks (modified, deleted, inserted, reordered, truncated).
    /// Exits non-zero if it does.
    Verify {
        /// Check an export (`mcpgate audit export`, JSONL or CSV) instead of
        /// the store; needs --public-key.
        #[arg(long)]
        file: Option<PathBuf>,
        /// A checkpoint key as `mcpgate audit key` prints it (repeatable:
        /// keys from before a rotation). The store is also checked with the
        /// gateway's own key (and MCPGATE_KEY_PREVIOUS's).
        #[arg(long = "public-key")]
        public_key: Vec<String>,
        /// Only the part of the log from this time (RFC 3339) or this long ago.
        #[arg(long)]
        since: Option<String>,
    },
    /// Write the log with what it takes to verify it offline (chain entries,
    /// marks, signed checkpoints).
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the part of the log from this time (RFC 3339) or this long
        /// ago; it still verifies on its own.
        #[arg(long)]
        since: Option<String>,
    },
    /// Print the public key that checks this gateway's audit checkpoints.
    Key,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

pub fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(global.config.as_deref())?;
    config.apply_overrides(
        global.listen.as_deref(),
        global.data_dir.as_deref(),
        global.database_url.as_deref(),
    )?;
    Ok(config)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Catalog commands work on files alone: no config, no database.
    if let Command::Catalog(command) = cli.command {
        return catalog(command);
    }
    let config = load_config(&cli.global)?;
    match cli.command {
        Command::Check => {
            // Native services' catalogs load here too, so a bad one is found
            // before `serve` (errors name file:line:column and the action).
            for (name, service) in &config.services {
                if let Some(native) = service.native() {
                    crate::native::catalog::load(&native.catalog, config.catalog_dir.as_deref())
                        .map_err(|e| anyhow::anyhow!("service '{name}': {e}"))?;
                }
            }
            println!(
                "config ok: {} service(s), {} user(s)",
                config.services.len(),
                config.users.len()
            );
            Ok(())
        }
        Command::Serve => serve(config).await,
        Command::Token(command) => token(config, command).await,
        Command::Oauth(command) => oauth(config, command).await,
        Command::Delegation(command) => cli_operator::delegation(config, command).await,
        Command::Windmill(command) => cli_operator::windmill(config, command).await,
        Command::Approval(command) => cli_operator::approval(config, command).await,
        Command::Grants(command) => cli_operator::grants(config, command).await,
        Command::Job(command) => cli_operator::job(&config, command),
        Command::Credentials(command) => cli_operator::credentials(config, command).await,
        Command::Secrets(command) => cli_operator::secrets(config, command).await,
        Command::Catalog(_) => unreachable!("handled before the config is loaded"),
        Command::Audit(AuditCommand::Verify {
            file,
            public_key,
            since,
        }) => audit_verify(&config, file, public_key, since).await,
        Command::Audit(AuditCommand::Export { format, out, since }) => {
            let pool = storage::connect(&config).await?;
            let since = since.map(|s| parse_since(&s)).transpose()?;
            let mut records = audit::records::load(&pool).await?;
            if let Some(since) = &since {
                records = audit::records::since(records, since);
            }
            records.insert(0, audit::records::header(since.as_deref()));
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot write {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            match format {
                ExportFormat::Jsonl => audit::records::write_jsonl(&mut sink, &records)?,
                ExportFormat::Csv => audit::records::write_csv(&mut sink, &records)?,
            }
            sink.flush()?;
            Ok(())
        }
        Command::Audit(AuditCommand::Key) => {
            let master = crate::keys::MasterKey::for_config(&config).map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                audit::checkpoint_key(&master, &config.audit)
                    .verifier()
                    .to_vkey()
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Query {
            subject,
            since,
            limit,
            json,
        }) => {
            let pool = storage::connect(&config).await?;
            let since = since.map(|s| parse_since(&s)).transpose()?;
            let rows = audit::query(
                &pool,
                &AuditFilter {
                    subject,
                    since,
                    limit,
                    ..Default::default()
                },
            )
            .await?;
            for row in rows {
                if json {
                    println!("{}", serde_json::to_string(&row)?);
                } else {
                    println!(
                        "{}  {:<8} {:<24} {:<24} {}{}  risk={} {}",
                        row.at,
                        row.decision,
                        row.subject,
                        row.actor,
                        row.tool,
                        row.action
                            .as_deref()
                            .map(|a| format!(".{a}"))
                            .unwrap_or_default(),
                        row.risk.map(|r| r.as_str()).unwrap_or("-"),
                        row.reason_code.as_deref().unwrap_or_default(),
                    );
                }
            }
            Ok(())
        }
    }
}

async fn audit_verify(
    config: &Config,
    file: Option<PathBuf>,
    public_key: Vec<String>,
    since: Option<String>,
) -> anyhow::Result<()> {
    let mut keys = public_key
        .iter()
        .map(|k| actors::audit_chain::VerifierKey::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let since = since.map(|s| parse_since(&s)).transpose()?;
    let (mut records, encoding) = match &file {
        Some(path) => {
            if keys.is_empty() {
                anyhow::bail!(
                    "verifying a file needs --public-key (print it with `mcpgate audit key` where the log was written)"
                );
            }
            let input = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            audit::records::read(std::io::BufReader::new(input))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => {
            // The gateway's own keys, and any given (older keys, kept from
            // before a rotation).
            let master = crate::keys::MasterKey::for_config(config).map_err(anyhow::Error::msg)?;
            keys.extend(
                audit::checkpoint_verifiers(&master, &config.audit).map_err(anyhow::Error::msg)?,
            );
            let pool = storage::connect(config).await?;
            let records = audit::records::load(&pool).await?;
            (records, audit::records::Encoding::Jsonl)
        }
    };
    if let Some(since) = &since {
        let header = audit::records::header(Some(since));
        records = audit::records::since(records, since);
        records.insert(0, header);
    }
    let report = audit::verify::verify(&records, &keys, encoding);
    let Some(first) = report.findings.first() else {
        println!(
            "audit log intact: {} row(s) in {} chain(s); {} entries signed, {} newest not yet signed",
            report.rows, report.chains, report.signed_entries, report.unsigned_entries
        );
        return Ok(());
    };
    println!("audit log BROKEN — first break: {first}");
    for finding in report.findings.iter().skip(1).take(50) {
        println!("  also: {finding}");
    }
    anyhow::bail!(
        "the audit log does not verify: {} finding(s)",
        report.findings.len()
    )
}

fn parse_since(text: &str) -> anyhow::Result<String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let at = time::OffsetDateTime::now_utc() - ago;
        return Ok(actors::format_rfc3339(at));
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--since '{text}': expected RFC 3339 or a duration like 1h"))?;
    Ok(actors::format_rfc3339(at))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let pool = storage::connect(&config).await?;
    let gw = Gateway::start(config, pool).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The bound address, not the configured one: `listen: 127.0.0.1:0` asks
    // the kernel for a free port, and this line says which.
    let listen = listener.local_addr().unwrap_or(listen);
    tracing::info!(%listen, services = gw.config().services.len(), "mcpgate listening");
    crate::http::serve(gw, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

async fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    let pool = storage::connect(&config).await?;
    match command {
        TokenCommand::Create {
            user,
            name,
            expires,
        } => {
            let Some(user) = config.user(&user) else {
                anyhow::bail!("no user '{user}' in the config; add it under `users:` first");
            };
            let expires_at = expires
                .map(|e| {
                    humantime::parse_duration(&e)
                        .map(|d| actors::format_rfc3339(time::OffsetDateTime::now_utc() + d))
                        .with_context(|| format!("--expires '{e}': expected a duration like 30d"))
                })
                .transpose()?;
            let created = tokens::create(&pool, &user.email, name.as_deref(), expires_at).await?;
            eprintln!(
                "token id {} for {} (shown once; store it safely):",
                created.id, user.email
            );
            println!("{}", created.token);
        }
        TokenCommand::Revoke { id } => {
            if tokens::revoke(&pool, &id).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no active token with id '{id}'");
            }
        }
        TokenCommand::List => {
            for t in tokens::list(&pool).await? {
                println!(
                    "{}  {:<28} {:<16} created {}  expires {}  {}",
                    t.id,
                    t.user_email,
                    t.name.unwrap_or_default(),
                    t.created_at,
                    t.expires_at.unwrap_or_else(|| "never".into()),
                    if t.revoked_at.is_some() {
                        "REVOKED"
                    } else {
                        "active"
                    }
                );
            }
        }
    }
    Ok(())
}

async fn oauth(config: Config, command: OauthCommand) -> anyhow::Result<()> {
    use crate::authserver::{signin, tokens as oauth_tokens};
    let pool = storage::connect(&config).await?;
    match command {
        OauthCommand::SigninLink { user, ttl } => {
            let user = signin::may_sign_in(&config, &user).map_err(|r| anyhow::anyhow!("{r}"))?;
            let ttl = humantime::parse_duration(&ttl)
                .with_context(|| format!("--ttl '{ttl}': expected a duration like 15m"))?;
            let link = signin::mint_link(&pool, &user, ttl).await?;
            eprintln!(
                "one-time sign-in link for {user}, valid {} (shown once; give it to them only):",
                humantime::format_duration(ttl)
            );
            println!("{}/oauth/signin?link={link}", config.public_url());
        }
        OauthCommand::Clients { user } => {
            for c in oauth_tokens::authorized_clients(&pool, &user).await? {
                println!(
                    "{}  {:<24} {}  since {}  until {}",
                    c.family_id, c.client_name, c.client_id, c.created_at, c.expires_at
                );
            }
        }
        OauthCommand::Revoke { user, client_id } => {
            let n = oauth_tokens::revoke_client(&pool, &user, &client_id).await?;
            if n == 0 {
                anyhow::bail!("{user} has no live authorization of '{client_id}'");
            }
            println!("revoked {n} authorization(s) of {client_id} for {user}");
        }
    }
    Ok(())
}

fn catalog(command: CatalogCommand) -> anyhow::Result<()> {
    match command {
        CatalogCommand::Check { specs } => {
            let (checked, problems) =
                crate::native::spec_check::check_shipped(&specs).map_err(|e| anyhow::anyhow!(e))?;
            for problem in &problems {
                eprintln!("{problem}");
            }
            if problems.is_empty() {
                println!(
                    "catalogs ok: {checked} actions in {} catalogs match their specs in {}",
                    crate::native::catalog::SHIPPED.len(),
                    specs.display()
                );
                Ok(())
            } else {
                anyhow::bail!("{} problem(s) in the shipped catalogs", problems.len())
            }
        }
        CatalogCommand::ImportOpenapi { spec, service, out } => {
            let doc = crate::native::spec::read_document(&spec).map_err(|e| anyhow::anyhow!(e))?;
            let text =
                crate::native::openapi_import::import(&doc, &service, &spec.display().to_string())
                    .map_err(|e| anyhow::anyhow!(e))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}
