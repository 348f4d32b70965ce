//! Operator commands: delegation (the feature flag, Windmill instances,
//! approvals, grants, `job validate`) and the credential vault. Writes go to
//! the gateway's store; a running gateway picks up revocations within
//! `delegation.revocation_poll`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::config::Config;
use crate::delegation::declaration::parse_job_file;
use crate::delegation::store::{self, Approval, Instance, RevokeFilter};
use crate::storage;

#[derive(Debug, Subcommand)]
pub enum DelegationCommand {
    /// Turn Delegated Access on (off by default).
    Enable,
    /// Turn Delegated Access off: token exchanges are refused.
    Disable,
    /// Show whether Delegated Access is on.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum WindmillCommand {
    /// Register (or update) a Windmill instance's workspace.
    Add {
        name: String,
        #[arg(long)]
        url: String,
        #[arg(long)]
        workspace: String,
        /// Flow-path glob allowed to delegate (repeatable). Default: any flow.
        #[arg(long = "allow-flow")]
        allow_flows: Vec<String>,
    },
    List,
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// Approve high_risk for one delegation.
    Add {
        #[arg(long)]
        instance: String,
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        flow: String,
        #[arg(long)]
        owner: String,
        /// Comma-separated services.
        #[arg(long, value_delimiter = ',')]
        services: Vec<String>,
    },
    List,
    Withdraw {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// Live grants (with --all, ended ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke one grant, all of a person's, or all of a flow's.
    Revoke {
        id: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        instance: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Validate a `.windmill/job.yml` against this gateway's services.
    Validate { path: PathBuf },
}

fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    )
}

pub async fn delegation(config: Config, command: DelegationCommand) -> anyhow::Result<()> {
    let pool = storage::connect(&config).await?;
    match command {
        DelegationCommand::Enable => store::set_delegation(&pool, true, &operator()).await?,
        DelegationCommand::Disable => store::set_delegation(&pool, false, &operator()).await?,
        DelegationCommand::Status => {}
    }
    let on = store::delegation_enabled(&pool).await?;
    println!("Delegated Access: {}", if on { "on" } else { "off" });
    Ok(())
}

pub async fn windmill(config: Config, command: WindmillCommand) -> anyhow::Result<()> {
    let pool = storage::connect(&config).await?;
    match command {
        WindmillCommand::Add {
            name,
            url,
            workspace,
            allow_flows,
        } => {
            let instance = Instance {
                name,
                base_url: url,
                workspace,
                allowed_flows: (!allow_flows.is_empty()).then_some(allow_flows),
            };
            instance.validate().map_err(anyhow::Error::msg)?;
            store::put_instance(&pool, &instance, &operator()).await?;
            println!(
                "registered {} ({} workspace {})",
                instance.name, instance.base_url, instance.workspace
            );
        }
        WindmillCommand::List => {
            for i in store::list_instances(&pool).await? {
                let flows = i
                    .allowed_flows
                    .map_or("any flow".to_owned(), |f| f.join(", "));
                println!("{}\t{}\t{}\t{}", i.name, i.base_url, i.workspace, flows);
            }
        }
        WindmillCommand::Remove { name } => {
            if !store::remove_instance(&pool, &name).await? {
                bail!("no instance '{name}'");
            }
            println!("removed {name}");
        }
    }
    Ok(())
}

pub async fn approval(config: Config, command: ApprovalCommand) -> anyhow::Result<()> {
    let pool = storage::connect(&config).await?;
    match command {
        ApprovalCommand::Add {
            instance,
            workspace,
            flow,
            owner,
            services,
        } => {
            let approval = Approval {
                id: String::new(),
                instance,
                workspace,
                flow_path: flow,
                owner,
                services,
                approved_by: operator(),
                approved_at: String::new(),
            };
            crate::admin::validate_approval(&pool, &config, &approval)
                .await
                .map_err(anyhow::Error::msg)?;
            let id = store::add_approval(&pool, &approval).await?;
            println!("{id}");
        }
        ApprovalCommand::List => {
            for a in store::list_approvals(&pool).await? {
                println!(
                    "{}\t{}/{}\t{}\t{}\t{}\tby {}",
                    a.id,
                    a.instance,
                    a.workspace,
                    a.flow_path,
                    a.owner,
                    a.services.join(","),
                    a.approved_by
                );
            }
        }
        ApprovalCommand::Withdraw { id } => {
            if !store::withdraw_approval(&pool, &id, &operator()).await? {
                bail!("no active approval '{id}'");
            }
            println!("withdrawn {id}");
        }
    }
    Ok(())
}

pub async fn grants(config: Config, command: GrantsCommand) -> anyhow::Result<()> {
    let pool = storage::connect(&config).await?;
    match command {
        GrantsCommand::List { all, json } => {
            for g in store::list_grants(&pool, all).await? {
                if json {
                    println!("{}", serde_json::to_string(&g)?);
                } else {
                    let scope: Vec<String> =
                        g.services.iter().map(|(s, r)| format!("{s}:{r}")).collect();
                    println!(
                        "{}\t{}\t{}\t{}\tjob {}\tsince {}\texpires {}{}",
                        g.id,
                        g.subject,
                        g.actor,
                        scope.join(" "),
                        g.job_id,
                        g.created_at,
                        g.expires_at,
                        g.end_reason
                            .map(|r| format!("\tended: {r}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        GrantsCommand::Revoke {
            id,
            subject,
            flow,
            instance,
        } => {
            let filter = RevokeFilter {
                grant_id: id,
                subject,
                flow_path: flow,
                instance,
            };
            if filter.is_empty() {
                bail!("name a grant id, --subject or --flow");
            }
            let ids = store::request_revocation(&pool, &filter, &operator()).await?;
            if ids.is_empty() {
                bail!("no live grant matches");
            }
            // The running gateway stops the actors; wait for it to say so.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let pending = store::pending_revocations(&pool).await?;
                let left: Vec<&String> = ids
                    .iter()
                    .filter(|id| pending.iter().any(|(p, _)| p == *id))
                    .collect();
                if left.is_empty() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    bail!(
                        "revocation recorded, but no running gateway confirmed it for {} (is the gateway running?)",
                        left.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for id in ids {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

pub fn job(config: &Config, command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Validate { path } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let known: HashSet<String> = config.services.keys().cloned().collect();
            let job = parse_job_file(&text, &path.display().to_string(), &known)?;
            let services = job.declaration.as_ref().map_or(
                "none (runs as the service account)".to_owned(),
                |d| {
                    d.services
                        .iter()
                        .map(|(s, r)| {
                            format!(
                                "{s}: [{}]",
                                r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            );
            println!(
                "{}: ok — job '{}', schedule {}, gateway-services {services}",
                path.display(),
                job.name,
                job.schedule.as_deref().unwrap_or("none")
            );
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a user's credential for a service; the secret is read from stdin.
    Set {
        #[arg(long)]
        user: String,
        #[arg(long)]
        service: String,
        /// token (Bearer), basic (`user:secret`) or oauth (a token set as JSON).
        #[arg(long, default_value = "token")]
        kind: String,
    },
    /// Who has a credential for what (never the secrets).
    List,
    Delete {
        #[arg(long)]
        user: String,
        #[arg(long)]
        service: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal stored credentials and live pseudonym mappings under the
    /// current key (MCPGATE_SECRET_KEY or the key file) from the previous one,
    /// given as MCPGATE_KEY_PREVIOUS.
    Rotate,
}

pub async fn credentials(config: Config, command: CredentialsCommand) -> anyhow::Result<()> {
    use crate::vault::{self, CredentialKind};
    let pool = storage::connect(&config).await?;
    match command {
        CredentialsCommand::Set {
            user,
            service,
            kind,
        } => {
            let kind = CredentialKind::parse(&kind).ok_or_else(|| {
                anyhow::anyhow!("--kind must be token, basic or oauth, not '{kind}'")
            })?;
            if config.user(&user).is_none() {
                bail!("no user '{user}' in the config");
            }
            if !config.services.contains_key(&service) {
                bail!("no service '{service}' in the config");
            }
            let mut secret = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut secret)?;
            let secret = secret.trim_end_matches(['\n', '\r']);
            let master = crate::keys::MasterKey::for_config(&config).map_err(anyhow::Error::msg)?;
            vault::set(&pool, &master, &user, &service, kind, secret).await?;
            println!(
                "stored a {} credential for {user} on {service}",
                kind.as_str()
            );
        }
        CredentialsCommand::List => {
            for c in vault::list(&pool).await? {
                println!(
                    "{}\t{}\t{}\tkey {}\t{}",
                    c.user, c.service, c.kind, c.key_id, c.updated_at
                );
            }
        }
        CredentialsCommand::Delete { user, service } => {
            if !vault::delete(&pool, &user, &service).await? {
                bail!("{user} has no credential for {service}");
            }
            println!("deleted {user} / {service}");
        }
    }
    Ok(())
}

pub async fn secrets(config: Config, command: SecretsCommand) -> anyhow::Result<()> {
    match command {
        SecretsCommand::Rotate => {
            let previous = std::env::var("MCPGATE_KEY_PREVIOUS").map_err(|_| {
                anyhow::anyhow!("set MCPGATE_KEY_PREVIOUS to the old key (64 hex characters)")
            })?;
            let previous = crate::keys::MasterKey::from_hex(&previous)
                .map_err(|e| anyhow::anyhow!("MCPGATE_KEY_PREVIOUS: {e}"))?;
            let current =
                crate::keys::MasterKey::for_config(&config).map_err(anyhow::Error::msg)?;
            let pool = storage::connect(&config).await?;
            let done = crate::vault::rotate(&pool, &previous, &current).await?;
            println!("re-sealed {done} credentials under key {}", current.id());
            let mappings = crate::pii::store::rotate(&pool, &previous, &current).await?;
            println!(
                "re-sealed {} pseudonym mappings ({} already current, {} under neither key, left to expire)",
                mappings.resealed, mappings.current, mappings.unreadable
            );
        }
    }
    Ok(())
}
