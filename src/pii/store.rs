//! The mapping store: pseudonym → sealed real value, per scope, with a TTL.
//! Writes go to the database (shared by replicas); a process-local cache
//! answers repeated lookups.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::Db;
use dashmap::DashMap;

use crate::keys::{self, MasterKey};

pub struct MappingStore {
    pool: Db,
    seal_key: [u8; 32],
    ttl_secs: i64,
    /// (scope_id, pseudonym) → (real value, expires_at).
    cache: DashMap<(String, String), (String, i64)>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where a pseudonym came from, when it is not this scope's.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    OtherScope,
    Unknown,
}

impl MappingStore {
    pub fn new(pool: Db, master: &MasterKey, ttl_secs: i64) -> Self {
        Self {
            pool,
            seal_key: master.derive("pii mappings v1"),
            ttl_secs,
            cache: DashMap::new(),
        }
    }

    fn aad(scope_id: &str, pseudonym: &str) -> Vec<u8> {
        format!("{scope_id}|{pseudonym}").into_bytes()
    }

    /// Remember `pseudonym` → `value` (refreshing its expiry).
    pub async fn remember(
        &self,
        scope_id: &str,
        pseudonym: &str,
        entity: &str,
        value: &str,
    ) -> Result<(), sqlx::Error> {
        let expires = now() + self.ttl_secs;
        let key = (scope_id.to_owned(), pseudonym.to_owned());
        if let Some(entry) = self.cache.get(&key)
            && entry.1 > now() + self.ttl_secs / 2
        {
            // Recently written: no need to touch the store again.
            return Ok(());
        }
        let sealed = keys::seal(
            &self.seal_key,
            value.as_bytes(),
            &Self::aad(scope_id, pseudonym),
        );
        sqlx::query(
            "INSERT INTO pii_mappings (scope_id, pseudonym, entity, sealed, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (scope_id, pseudonym) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(scope_id)
        .bind(pseudonym)
        .bind(entity)
        .bind(sealed)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        self.cache.insert(key, (value.to_owned(), expires));
        Ok(())
    }

    /// The real value behind `pseudonym` in this scope.
    pub async fn lookup(&self, scope_id: &str, pseudonym: &str) -> Result<Lookup, sqlx::Error> {
        let key = (scope_id.to_owned(), pseudonym.to_owned());
        if let Some(entry) = self.cache.get(&key)
            && entry.1 > now()
        {
            return Ok(Lookup::Found(entry.0.clone()));
        }
        let row: Option<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT sealed, expires_at FROM pii_mappings WHERE scope_id = $1 AND pseudonym = $2 AND expires_at > $3",
        )
        .bind(scope_id)
        .bind(pseudonym)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        if let Some((sealed, expires)) = row {
            return match keys::open(&self.seal_key, &sealed, &Self::aad(scope_id, pseudonym))
                .and_then(|bytes| String::from_utf8(bytes).ok())
            {
                Some(value) => {
                    self.cache.insert(key, (value.clone(), expires));
                    Ok(Lookup::Found(value))
                }
                // Sealed under another key (rotated): as good as unknown.
                None => Ok(Lookup::Unknown),
            };
        }
        let elsewhere: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM pii_mappings WHERE pseudonym = $1 AND expires_at > $2 LIMIT 1",
        )
        .bind(pseudonym)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(if elsewhere.is_some() {
            Lookup::OtherScope
        } else {
            Lookup::Unknown
        })
    }

    /// Drop expired rows (called now and then).
    pub async fn expire(&self) -> Result<u64, sqlx::Error> {
        self.cache.retain(|_, (_, expires)| *expires > now());
        Ok(
            sqlx::query("DELETE FROM pii_mappings WHERE expires_at <= $1")
                .bind(now())
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
