//! Durable delegation state: the feature flag, registered Windmill
//! instances, admin approvals of high_risk, and the record of grants.
//! Shared by the admin API and the CLI; live grants themselves are actors.

use std::collections::{BTreeMap, HashSet};

use actors::grant::Risk;
use actors::write_plan::{self, Plan, PlanError, Statement};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::storage::Db;

use crate::domain::glob_match;

const DELEGATION_FLAG: &str = "delegated_access";

pub async fn delegation_enabled(pool: &Db) -> Result<bool, sqlx::Error> {
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(DELEGATION_FLAG)
        .fetch_optional(pool)
        .await?;
    Ok(is_on(value.as_deref()))
}

/// The stored switch's value as read: only "on" is on (a missing row is off).
fn is_on(value: Option<&str>) -> bool {
    value == Some("on")
}

pub async fn set_delegation(pool: &Db, enabled: bool, by: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO settings (key, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
    )
    .bind(DELEGATION_FLAG)
    .bind(if enabled { "on" } else { "off" })
    .bind(actors::now_rfc3339())
    .bind(by)
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub base_url: String,
    pub workspace: String,
    /// Flow-path globs allowed to delegate; `None` = any flow.
    #[serde(default)]
    pub allowed_flows: Option<Vec<String>>,
}

impl Instance {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "instance name '{}' must use only letters, digits, '-' or '_'",
                self.name
            ));
        }
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| format!("base_url '{}' is not a URL: {e}", self.base_url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "base_url '{}' must be an http(s) URL with a host",
                self.base_url
            ));
        }
        if self.workspace.is_empty()
            || !self
                .workspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "workspace '{}' is not a Windmill workspace id",
                self.workspace
            ));
        }
        Ok(())
    }

    pub fn allows_flow(&self, path: &str) -> bool {
        match &self.allowed_flows {
            None => true,
            Some(globs) => globs.iter().any(|g| glob_match(g, path)),
        }
    }
}

pub async fn put_instance(pool: &Db, instance: &Instance, by: &str) -> Result<(), sqlx::Error> {
    let allowed = instance
        .allowed_flows
        .as_ref()
        .map(|f| serde_json::to_string(f).expect("strings serialize"));
    sqlx::query(
        "INSERT INTO windmill_instances (name, base_url, workspace, allowed_flows, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET base_url = excluded.base_url, \
         workspace = excluded.workspace, allowed_flows = excluded.allowed_flows",
    )
    .bind(&instance.name)
    .bind(instance.base_url.trim_end_matches('/'))
    .bind(&instance.workspace)
    .bind(allowed)
    .bind(actors::now_rfc3339())
    .bind(by)
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(())
}

pub async fn remove_instance(pool: &Db, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM windmill_instances WHERE name = $1")
        .bind(name)
        .execute(&mut *crate::storage::writer(pool).await?)
        .await?;
    Ok(done.rows_affected() > 0)
}

fn instance_from(row: &sqlx::any::AnyRow) -> Instance {
    let allowed: Option<String> = row.get("allowed_flows");
    Instance {
        name: row.get("name"),
        base_url: row.get("base_url"),
        workspace: row.get("workspace"),
        allowed_flows: allowed.and_then(|text| serde_json::from_str(&text).ok()),
    }
}

pub async fn list_instances(pool: &Db) -> Result<Vec<Instance>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM windmill_instances ORDER BY name")
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(instance_from).collect())
}

/// The instances registered for `workspace` (narrowed to `name` if given).
pub async fn instances_for(
    pool: &Db,
    workspace: &str,
    name: Option<&str>,
) -> Result<Vec<Instance>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM windmill_instances WHERE workspace = $1 AND ($2 IS NULL OR name = $2) ORDER BY name",
    )
    .bind(workspace)
    .bind(name)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(instance_from).collect())
}

/// What an exchange reads before it calls Windmill, in one round trip:
/// whether delegation is on, and the instances registered for `workspace`
/// (narrowed to `name` if given).
pub async fn exchange_context(
    pool: &Db,
    workspace: &str,
    name: Option<&str>,
) -> Result<(bool, Vec<Instance>), sqlx::Error> {
    // The one-row left side keeps the setting's row when no instance matches.
    let rows = sqlx::query(
        "SELECT s.value AS delegation, w.name, w.base_url, w.workspace, w.allowed_flows \
         FROM (SELECT 1 AS one) AS o \
         LEFT JOIN settings s ON s.key = $1 \
         LEFT JOIN windmill_instances w ON w.workspace = $2 AND ($3 IS NULL OR w.name = $3) \
         ORDER BY w.name",
    )
    .bind(DELEGATION_FLAG)
    .bind(workspace)
    .bind(name)
    .fetch_all(pool)
    .await?;
    let enabled = is_on(
        rows.first()
            .and_then(|row| row.get::<Option<String>, _>("delegation"))
            .as_deref(),
    );
    let instances = rows
        .iter()
        .filter(|row| row.get::<Option<String>, _>("name").is_some())
        .map(instance_from)
        .collect();
    Ok((enabled, instances))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    #[serde(default)]
    pub id: String,
    pub instance: String,
    pub workspace: String,
    pub flow_path: String,
    pub owner: String,
    pub services: Vec<String>,
    #[serde(default)]
    pub approved_by: String,
    #[serde(default)]
    pub approved_at: String,
}

pub async fn add_approval(pool: &Db, approval: &Approval) -> Result<String, sqlx::Error> {
    let id = format!("apr_{}", hex::encode(rand::random::<[u8; 8]>()));
    sqlx::query(
        "INSERT INTO delegation_approvals (id, instance, workspace, flow_path, owner, services, approved_by, approved_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&approval.instance)
    .bind(&approval.workspace)
    .bind(&approval.flow_path)
    .bind(approval.owner.to_ascii_lowercase())
    .bind(serde_json::to_string(&approval.services).expect("strings serialize"))
    .bind(&approval.approved_by)
    .bind(actors::now_rfc3339())
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(id)
}

pub async fn withdraw_approval(pool: &Db, id: &str, by: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE delegation_approvals SET withdrawn_at = $1, withdrawn_by = $2 WHERE id = $3 AND withdrawn_at IS NULL",
    )
    .bind(actors::now_rfc3339())
    .bind(by)
    .bind(id)
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn list_approvals(pool: &Db) -> Result<Vec<Approval>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM delegation_approvals WHERE withdrawn_at IS NULL ORDER BY approved_at",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let services: String = row.get("services");
            Approval {
                id: row.get("id"),
                instance: row.get("instance"),
                workspace: row.get("workspace"),
                flow_path: row.get("flow_path"),
                owner: row.get("owner"),
                services: serde_json::from_str(&services).unwrap_or_default(),
                approved_by: row.get("approved_by"),
                approved_at: row.get("approved_at"),
            }
        })
        .collect())
}

/// Services whose high_risk an admin approved for exactly this delegation.
pub async fn approved_high_risk(
    pool: &Db,
    instance: &str,
    workspace: &str,
    flow_path: &str,
    owner: &str,
) -> Result<HashSet<String>, sqlx::Error> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT services FROM delegation_approvals WHERE withdrawn_at IS NULL \
         AND instance = $1 AND workspace = $2 AND flow_path = $3 AND owner = $4",
    )
    .bind(instance)
    .bind(workspace)
    .bind(flow_path)
    .bind(owner.to_ascii_lowercase())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .flat_map(|text| serde_json::from_str::<Vec<String>>(text).unwrap_or_default())
        .collect())
}

/// A grant as recorded (the live one is an actor).
#[derive(Debug, Clone, Serialize)]
pub struct GrantRecord {
    pub id: String,
    pub subject: String,
    pub actor: String,
    pub instance: String,
    pub workspace: String,
    pub flow_path: String,
    pub job_id: String,
    pub flow_job_id: Option<String>,
    pub services: BTreeMap<String, String>,
    pub created_at: String,
    pub expires_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
}

/// Record a new grant and, in the same commit, `holder` as the replica that
/// will hold its actor. `secret_sha256` and `declared` let another gateway on
/// the same store serve it (see [`adoptable`]); they are never listed.
pub async fn insert_grant(
    pool: &Db,
    grant: &GrantRecord,
    secret_sha256: &[u8; 32],
    declared: &BTreeMap<String, String>,
    holder: &str,
) -> Result<(), PlanError> {
    // A plan: on SQLite, the exchanges arriving together commit with one
    // fsync (and beside the audit rows queued with them).
    let plan = Plan::new()
        .then(
            Statement::new(
                "INSERT INTO delegation_grants (id, subject, actor, instance, workspace, flow_path, \
                 job_id, flow_job_id, scope, created_at, expires_at, secret_sha256, declared) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&grant.id)
            .bind(&grant.subject)
            .bind(&grant.actor)
            .bind(&grant.instance)
            .bind(&grant.workspace)
            .bind(&grant.flow_path)
            .bind(&grant.job_id)
            .bind(&grant.flow_job_id)
            .bind(serde_json::to_string(&grant.services).expect("strings serialize"))
            .bind(&grant.created_at)
            .bind(&grant.expires_at)
            .bind(secret_sha256.to_vec())
            .bind(serde_json::to_string(declared).expect("strings serialize")),
        )
        .then(
            Statement::new(
                "INSERT INTO grant_holders (grant_id, replica, since) VALUES ($1, $2, $3)",
            )
            .bind(&grant.id)
            .bind(holder)
            .bind(&grant.created_at),
        );
    write_plan::apply(pool, plan).await.map(drop)
}

/// A grant as another gateway on the store needs it to serve its token.
pub struct Adoptable {
    pub record: GrantRecord,
    pub secret_sha256: Vec<u8>,
    pub declared: BTreeMap<String, String>,
    /// Who asked for its revocation, if anyone has.
    pub revoked_by: Option<String>,
    pub revoke_requested: bool,
}

pub async fn adoptable(pool: &Db, id: &str) -> Result<Option<Adoptable>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM delegation_grants WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| {
        let secret: Option<Vec<u8>> = row.get("secret_sha256");
        let declared: Option<String> = row.get("declared");
        let requested: Option<String> = row.get("revoke_requested_at");
        Adoptable {
            record: grant_from(&row),
            secret_sha256: secret.unwrap_or_default(),
            declared: declared
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or_default(),
            revoked_by: row.get("revoked_by"),
            revoke_requested: requested.is_some(),
        }
    }))
}

fn grant_from(row: &sqlx::any::AnyRow) -> GrantRecord {
    let scope: String = row.get("scope");
    GrantRecord {
        id: row.get("id"),
        subject: row.get("subject"),
        actor: row.get("actor"),
        instance: row.get("instance"),
        workspace: row.get("workspace"),
        flow_path: row.get("flow_path"),
        job_id: row.get("job_id"),
        flow_job_id: row.get("flow_job_id"),
        services: serde_json::from_str(&scope).unwrap_or_default(),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        ended_at: row.get("ended_at"),
        end_reason: row.get("end_reason"),
    }
}

/// Live grants (or every grant, newest first, when `include_ended`).
pub async fn list_grants(pool: &Db, include_ended: bool) -> Result<Vec<GrantRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM delegation_grants WHERE ($1 OR ended_at IS NULL) ORDER BY created_at DESC LIMIT 1000",
    )
    .bind(include_ended)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(grant_from).collect())
}

pub async fn grant(pool: &Db, id: &str) -> Result<Option<GrantRecord>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM delegation_grants WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(grant_from))
}

/// Grant `id`'s end on record (the first reason wins).
fn end_statement(id: &str, reason: &str) -> Statement {
    Statement::new(
        "UPDATE delegation_grants SET ended_at = $1, end_reason = $2 \
         WHERE id = $3 AND ended_at IS NULL",
    )
    .bind(actors::now_rfc3339())
    .bind(reason)
    .bind(id)
}

/// `replica` no longer holding grant `id`.
fn release_statement(id: &str, replica: &str) -> Statement {
    Statement::new("DELETE FROM grant_holders WHERE grant_id = $1 AND replica = $2")
        .bind(id)
        .bind(replica)
}

/// Grant `id` ended: its end on record (the first reason wins), and every
/// replica told.
pub async fn mark_ended(pool: &Db, id: &str, reason: &str) -> Result<(), sqlx::Error> {
    write_plan::apply(pool, Plan::new().then(end_statement(id, reason))).await?;
    notify_grant_change(pool, id).await
}

/// Grant `id` ended and `replica` no longer holds it, in one commit: a
/// revocation's acknowledgement waits for it. Call it once the grant's gate
/// is closed, so no call passes while it still sits in the replica's table.
pub async fn end_and_release(
    pool: &Db,
    id: &str,
    reason: &str,
    replica: &str,
) -> Result<(), sqlx::Error> {
    let plan = Plan::new()
        .then(end_statement(id, reason))
        .then(release_statement(id, replica));
    write_plan::apply(pool, plan).await?;
    notify_grant_change(pool, id).await
}

/// `replica` no longer holds grant `id`. A revocation is acknowledged once no
/// replica holds the grant, so call this only after the grant left the
/// replica's table: the acknowledgement then means it is gone everywhere.
pub async fn release_holder(pool: &Db, id: &str, replica: &str) -> Result<(), sqlx::Error> {
    write_plan::apply(pool, Plan::new().then(release_statement(id, replica))).await?;
    Ok(())
}

/// The channel on which PostgreSQL tells every replica that a grant was
/// revoked or ended, so the ones holding it stop it at once.
pub const GRANTS_CHANNEL: &str = "mcpgate_grants";

/// On PostgreSQL, wake every replica's revocation watcher. (On SQLite one
/// gateway owns the store; other processes are seen by its poll.)
async fn notify_grant_change(pool: &Db, id: &str) -> Result<(), sqlx::Error> {
    if crate::storage::backend(pool) == crate::storage::Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(GRANTS_CHANNEL)
            .bind(id)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// `replica` now holds a live actor for grant `id`. Returns whether the
/// grant is still live in the store: checked *after* the row is written, so a
/// revocation either sees this holder and waits for it, or is seen here.
pub async fn add_holder(pool: &Db, id: &str, replica: &str) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO grant_holders (grant_id, replica, since) VALUES ($1, $2, $3) \
         ON CONFLICT (grant_id, replica) DO NOTHING",
    )
    .bind(id)
    .bind(replica)
    .bind(actors::now_rfc3339())
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    is_live(pool, id).await
}

/// Whether grant `id` is still live in the store (not ended, no revocation
/// asked for): a read, for a holder registered when the grant was recorded.
pub async fn is_live(pool: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let live: Option<String> = sqlx::query_scalar(
        "SELECT id FROM delegation_grants \
         WHERE id = $1 AND ended_at IS NULL AND revoke_requested_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(live.is_some())
}

/// The replicas still holding any of the grants `ids`.
pub async fn holders(pool: &Db, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let rows = rows_for_ids(pool, ids, |list| {
        format!("SELECT DISTINCT replica FROM grant_holders WHERE grant_id IN ({list})")
    })
    .await?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get("replica")).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The rows `select` gives for the grants `ids`: `select` receives the
/// placeholder list (`$1, $2, …`) to put in its `IN (…)`; the ids are bound,
/// 500 at a time.
async fn rows_for_ids(
    pool: &Db,
    ids: &[String],
    select: impl Fn(&str) -> String,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let list = crate::storage::parameter_list(pool, chunk.len());
        // Only placeholders are spliced in: the ids are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(select(&list)));
        for id in chunk {
            query = query.bind(id);
        }
        out.extend(query.fetch_all(pool).await?);
    }
    Ok(out)
}

/// Which live grants a revocation names.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RevokeFilter {
    pub grant_id: Option<String>,
    /// Every grant acting for this person.
    pub subject: Option<String>,
    /// Every grant of this flow path (optionally on one instance).
    pub flow_path: Option<String>,
    pub instance: Option<String>,
}

impl RevokeFilter {
    /// The grant id, when the filter names nothing else.
    pub fn only_grant_id(&self) -> Option<&str> {
        match self {
            RevokeFilter {
                grant_id: Some(id),
                subject: None,
                flow_path: None,
                instance: None,
            } => Some(id),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.grant_id.is_none() && self.subject.is_none() && self.flow_path.is_none()
    }
}

/// Mark the matching live grants for revocation; returns their ids. The
/// gateway that holds their actors stops them (see `GrantTable`).
pub async fn request_revocation(
    pool: &Db,
    filter: &RevokeFilter,
    by: &str,
) -> Result<Vec<String>, sqlx::Error> {
    // Only the conditions given, so a grant id is found by its key: a
    // `($n IS NULL OR id = $n)` form hides the key from the planner, and the
    // revocation then reads every live grant (23 ms with 10,000 live).
    // `{}` stands for the condition's parameter.
    let named = [
        ("id = {}", &filter.grant_id),
        ("lower(subject) = lower({})", &filter.subject),
        ("flow_path = {}", &filter.flow_path),
        ("instance = {}", &filter.instance),
    ];
    let mut sql = String::from(
        "UPDATE delegation_grants SET revoke_requested_at = $1, revoked_by = $2 \
         WHERE ended_at IS NULL AND revoke_requested_at IS NULL",
    );
    let mut values = Vec::new();
    for (condition, value) in named {
        if let Some(value) = value {
            values.push(value);
            let parameter = format!("${}", values.len() + 2);
            sql.push_str(" AND ");
            sql.push_str(&condition.replace("{}", &parameter));
        }
    }
    sql.push_str(" RETURNING id");
    // Only constant text and placeholders: the values are bound. A plan, so
    // on SQLite it commits with the writes queued beside it.
    let mut statement = Statement::new(sql)
        .bind(actors::now_rfc3339())
        .bind(by)
        .returning();
    for value in values {
        statement = statement.bind(value);
    }
    let ids = write_plan::apply(pool, Plan::new().then(statement))
        .await?
        .into_iter()
        .flatten()
        .collect::<Vec<String>>();
    for id in &ids {
        notify_grant_change(pool, id).await?;
    }
    Ok(ids)
}

/// Revocations asked for and not yet carried out: (grant id, by whom).
pub async fn pending_revocations(pool: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, revoked_by FROM delegation_grants \
         WHERE revoke_requested_at IS NOT NULL AND ended_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let by: Option<String> = r.get("revoked_by");
            (r.get("id"), by.unwrap_or_else(|| "an operator".into()))
        })
        .collect())
}

/// Of the grants `ids` (the ones this gateway holds), those another process
/// revoked or ended, with the reason to close them with.
pub async fn ended_elsewhere(
    pool: &Db,
    ids: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = rows_for_ids(pool, ids, |list| {
        format!(
            "SELECT id, revoked_by, revoke_requested_at, end_reason FROM delegation_grants \
             WHERE id IN ({list}) AND (revoke_requested_at IS NOT NULL OR ended_at IS NOT NULL)"
        )
    })
    .await?;
    Ok(rows.iter().map(end_of).collect())
}

/// Every revocation not yet carried out, and every grant that ended at or
/// after `since`, with the reason to close them with: what the revocation
/// watcher stops of the grants it holds. Two index reads (the partial index
/// of pending revocations, and `ended_at`), however many grants are live.
pub async fn ended_since(pool: &Db, since: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, revoked_by, revoke_requested_at, end_reason FROM delegation_grants \
         WHERE revoke_requested_at IS NOT NULL AND ended_at IS NULL \
         UNION ALL \
         SELECT id, revoked_by, revoke_requested_at, end_reason FROM delegation_grants \
         WHERE ended_at >= $1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(end_of).collect())
}

/// A grant row's id and the reason its actor ends with.
fn end_of(row: &sqlx::any::AnyRow) -> (String, String) {
    let requested: Option<String> = row.get("revoke_requested_at");
    let by: Option<String> = row.get("revoked_by");
    let ended: Option<String> = row.get("end_reason");
    let reason = match (requested, ended) {
        (Some(_), _) => format!("revoked by {}", by.as_deref().unwrap_or("an operator")),
        (None, Some(reason)) => reason,
        (None, None) => "the grant is no longer active".into(),
    };
    (row.get("id"), reason)
}

/// Grants whose actors died with a previous run. On SQLite one gateway owns
/// the store, so every live grant is such an orphan; on PostgreSQL the other
/// replicas may still serve theirs, so only the expired ones are ended.
pub async fn end_orphans(pool: &Db) -> Result<u64, sqlx::Error> {
    let done = match crate::storage::backend(pool) {
        crate::storage::Backend::Sqlite => {
            sqlx::query("DELETE FROM grant_holders")
                .execute(&mut *crate::storage::writer(pool).await?)
                .await?;
            sqlx::query(
                "UPDATE delegation_grants SET ended_at = $1, end_reason = 'gateway restarted' \
                 WHERE ended_at IS NULL",
            )
            .bind(actors::now_rfc3339())
            .execute(&mut *crate::storage::writer(pool).await?)
            .await?
        }
        crate::storage::Backend::Postgres => return end_expired(pool).await,
    };
    Ok(done.rows_affected())
}

/// Record the end of live grants whose lifetime is over, and forget the
/// holders of ended grants (a replica that died cannot remove its own rows).
pub async fn end_expired(pool: &Db) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE delegation_grants SET ended_at = $1, end_reason = 'expired' \
         WHERE ended_at IS NULL AND expires_at < $1",
    )
    .bind(actors::now_rfc3339())
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    sqlx::query(
        "DELETE FROM grant_holders WHERE grant_id IN \
         (SELECT id FROM delegation_grants WHERE ended_at IS NOT NULL AND expires_at < $1)",
    )
    .bind(actors::now_rfc3339())
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(done.rows_affected())
}

/// `risk` as the text stored in grant records.
pub fn scope_text(services: &BTreeMap<String, Risk>) -> BTreeMap<String, String> {
    services
        .iter()
        .map(|(s, r)| (s.clone(), r.as_str().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, expires_at: time::OffsetDateTime) -> GrantRecord {
        GrantRecord {
            id: id.into(),
            subject: "alice@example.com".into(),
            actor: "windmill:prod/finance/f/x".into(),
            instance: "prod".into(),
            workspace: "finance".into(),
            flow_path: "f/x".into(),
            job_id: "job".into(),
            flow_job_id: None,
            services: BTreeMap::new(),
            created_at: actors::now_rfc3339(),
            expires_at: actors::format_rfc3339(expires_at),
            ended_at: None,
            end_reason: None,
        }
    }

    #[tokio::test]
    async fn expired_grants_are_ended_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let now = time::OffsetDateTime::now_utc();
        let hash = [7u8; 32];
        for (id, at) in [
            ("grt_old", now - time::Duration::minutes(1)),
            ("grt_live", now + time::Duration::minutes(10)),
        ] {
            insert_grant(&pool, &record(id, at), &hash, &BTreeMap::new(), "replica-1")
                .await
                .unwrap();
        }
        assert_eq!(end_expired(&pool).await.unwrap(), 1);
        let old = adoptable(&pool, "grt_old").await.unwrap().unwrap();
        assert_eq!(old.record.end_reason.as_deref(), Some("expired"));
        assert_eq!(old.secret_sha256, hash.to_vec());
        let live = grant(&pool, "grt_live").await.unwrap().unwrap();
        assert!(live.ended_at.is_none());
        // What a replica holding both would be told to stop.
        let ended = ended_elsewhere(&pool, &["grt_old".into(), "grt_live".into()])
            .await
            .unwrap();
        assert_eq!(ended, vec![("grt_old".to_owned(), "expired".to_owned())]);
    }

    #[tokio::test]
    async fn the_watcher_reads_pending_revocations_and_recent_ends_only() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
        for id in ["grt_a", "grt_b", "grt_c", "grt_d"] {
            insert_grant(
                &pool,
                &record(id, later),
                &[7u8; 32],
                &BTreeMap::new(),
                "r1",
            )
            .await
            .unwrap();
        }
        mark_ended(&pool, "grt_a", "job ended").await.unwrap();
        let after_a = actors::now_rfc3339();
        mark_ended(&pool, "grt_b", "expired").await.unwrap();
        // By id: only that grant, though it names no other condition.
        let by_id = RevokeFilter {
            grant_id: Some("grt_c".into()),
            ..Default::default()
        };
        assert_eq!(
            request_revocation(&pool, &by_id, "ops@example.com")
                .await
                .unwrap(),
            vec!["grt_c".to_owned()]
        );
        let mut seen = ended_since(&pool, &after_a).await.unwrap();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("grt_b".to_owned(), "expired".to_owned()),
                ("grt_c".to_owned(), "revoked by ops@example.com".to_owned()),
            ]
        );
        // A subject filter matches case-insensitively and skips the revoked.
        let by_subject = RevokeFilter {
            subject: Some("ALICE@example.com".into()),
            ..Default::default()
        };
        assert_eq!(
            request_revocation(&pool, &by_subject, "ops@example.com")
                .await
                .unwrap(),
            vec!["grt_d".to_owned()]
        );
    }
}
