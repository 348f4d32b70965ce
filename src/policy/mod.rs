//! Policy at run time: the action catalogs every call is classified against
//! (each connector's tools + the config's policy + the admin's risk
//! overrides), the overrides' store and their listener, and the pure
//! decision of one call ([`decide`]).

pub mod decide;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};

use actors::connector::ServiceDirectory;
use dashmap::DashMap;

use crate::catalog::ServiceCatalog;
use crate::classify::ClassifyRule;
use crate::config::Config;
use crate::domain::Risk;
use crate::storage::{self, Backend, Db};

/// Where a replica tells the others that the admin risk overrides changed.
const POLICY_CHANNEL: &str = "mcpgate_policy";

/// The live action catalogs and the admin risk overrides behind them.
pub struct Catalogs {
    config: Arc<Config>,
    pool: Db,
    directory: ServiceDirectory,
    /// Argument rules native catalogs declare (`classify_sql`): applied
    /// before the tool check, since they say what an action really is.
    catalog_rules: Vec<ClassifyRule>,
    built: DashMap<String, Arc<ServiceCatalog>>,
    overrides: RwLock<Arc<BTreeMap<String, Risk>>>,
}

impl Catalogs {
    /// Load the overrides; on PostgreSQL, listen for other replicas' changes.
    pub async fn start(
        config: Arc<Config>,
        pool: Db,
        directory: ServiceDirectory,
        catalog_rules: Vec<ClassifyRule>,
    ) -> Result<Arc<Catalogs>, sqlx::Error> {
        let overrides = load_overrides(&pool).await?;
        let catalogs = Arc::new(Catalogs {
            config,
            pool,
            directory,
            catalog_rules,
            built: DashMap::new(),
            overrides: RwLock::new(Arc::new(overrides)),
        });
        if storage::backend(&catalogs.pool) == Backend::Postgres {
            spawn_override_listener(Arc::downgrade(&catalogs));
        }
        Ok(catalogs)
    }

    pub fn catalog_rules(&self) -> &[ClassifyRule] {
        &self.catalog_rules
    }

    pub fn directory(&self) -> &ServiceDirectory {
        &self.directory
    }

    /// The action catalog of `service` for its current connection, rebuilt
    /// only when the connector reconnects or the overrides change.
    pub fn catalog(&self, service: &str) -> Option<Arc<ServiceCatalog>> {
        let config = self.config.services.get(service)?;
        let status = self.directory.get(service)?;
        if status.generation == 0 {
            return None;
        }
        if let Some(cached) = self.built.get(service)
            && cached.generation == status.generation
        {
            return Some(cached.clone());
        }
        let overrides = self.overrides();
        let policy = if overrides.is_empty() {
            Cow::Borrowed(&self.config.policy)
        } else {
            let mut merged = self.config.policy.clone();
            merged
                .risk
                .extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
            Cow::Owned(merged)
        };
        let built = Arc::new(ServiceCatalog::build(
            service,
            config,
            &policy,
            status.generation,
            &status.tools,
        ));
        self.built.insert(service.to_owned(), built.clone());
        Some(built)
    }

    pub fn overrides(&self) -> Arc<BTreeMap<String, Risk>> {
        self.overrides.read().expect("overrides lock").clone()
    }

    /// Set (or with `None` remove) an admin risk override; catalogs rebuild,
    /// here and (through the store's notification) on every other replica.
    pub async fn set_override(
        &self,
        pattern: &str,
        risk: Option<Risk>,
        by: &str,
    ) -> Result<bool, sqlx::Error> {
        let changed = match risk {
            Some(risk) => {
                sqlx::query(
                    "INSERT INTO risk_overrides (pattern, risk, set_by, set_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (pattern) DO UPDATE SET risk = excluded.risk, set_by = excluded.set_by, set_at = excluded.set_at",
                )
                .bind(pattern)
                .bind(risk.as_str())
                .bind(by)
                .bind(actors::now_rfc3339())
                .execute(&mut *crate::storage::writer(&self.pool).await?)
                .await?
                .rows_affected()
                    > 0
            }
            None => {
                sqlx::query("DELETE FROM risk_overrides WHERE pattern = $1")
                    .bind(pattern)
                    .execute(&mut *crate::storage::writer(&self.pool).await?)
                    .await?
                    .rows_affected()
                    > 0
            }
        };
        self.reload_overrides().await?;
        if storage::backend(&self.pool) == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(POLICY_CHANNEL)
                .execute(&self.pool)
                .await?;
        }
        Ok(changed)
    }

    /// Read the admin risk overrides from the store; catalogs rebuild on next use.
    pub async fn reload_overrides(&self) -> Result<(), sqlx::Error> {
        let fresh = load_overrides(&self.pool).await?;
        *self.overrides.write().expect("overrides lock") = Arc::new(fresh);
        self.built.clear();
        Ok(())
    }
}

async fn load_overrides(pool: &Db) -> Result<BTreeMap<String, Risk>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT pattern, risk FROM risk_overrides")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(pattern, risk)| Risk::parse(&risk).map(|r| (pattern, r)))
        .collect())
}

/// Reload the overrides whenever another replica changed them (and after
/// each reconnect, in case one was missed); ends with the catalogs.
fn spawn_override_listener(catalogs: Weak<Catalogs>) {
    let Some(pool) = catalogs.upgrade().map(|c| c.pool.clone()) else {
        return;
    };
    storage::spawn_notification_listener(&pool, POLICY_CHANNEL, move || {
        let catalogs = catalogs.clone();
        async move {
            match catalogs.upgrade() {
                Some(c) => c.reload_overrides().await.map(|()| true),
                None => Ok(false),
            }
        }
    });
}
