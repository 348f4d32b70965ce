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

/// The HKDF purpose of the key that seals mappings.
const PURPOSE: &str = "pii mappings v1";

/// What a key rotation did to the live mappings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotated {
    pub resealed: u64,
    /// Already under the current key.
    pub current: u64,
    /// Sealed under neither key: left to expire (their pseudonyms stay unknown).
    pub unreadable: u64,
}

/// Re-seal the live mappings sealed under `previous` with `current`, so
/// pseudonyms handed out before a rotation still rehydrate after it.
pub async fn rotate(
    pool: &Db,
    previous: &MasterKey,
    current: &MasterKey,
) -> Result<Rotated, sqlx::Error> {
    let (old_key, new_key) = (previous.derive(PURPOSE), current.derive(PURPOSE));
    let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT scope_id, pseudonym, sealed FROM pii_mappings WHERE expires_at > $1",
    )
    .bind(now())
    .fetch_all(pool)
    .await?;
    let mut done = Rotated::default();
    let mut tx = crate::storage::begin_write(pool).await?;
    for (scope_id, pseudonym, sealed) in rows {
        let aad = MappingStore::aad(&scope_id, &pseudonym);
        if keys::open(&new_key, &sealed, &aad).is_some() {
            done.current += 1;
            continue;
        }
        let Some(value) = keys::open(&old_key, &sealed, &aad) else {
            done.unreadable += 1;
            continue;
        };
        sqlx::query("UPDATE pii_mappings SET sealed = $1 WHERE scope_id = $2 AND pseudonym = $3")
            .bind(keys::seal(&new_key, &value, &aad))
            .bind(&scope_id)
            .bind(&pseudonym)
            .execute(&mut *tx)
            .await?;
        done.resealed += 1;
    }
    tx.commit().await?;
    Ok(done)
}

impl MappingStore {
    pub fn new(pool: Db, master: &MasterKey, ttl_secs: i64) -> Self {
        Self {
            pool,
            seal_key: master.derive(PURPOSE),
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
        .execute(&mut *crate::storage::writer(&self.pool).await?)
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
                .execute(&mut *crate::storage::writer(&self.pool).await?)
                .await?
                .rows_affected(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pseudonyms_from_before_a_key_rotation_still_rehydrate_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        let before = MappingStore::new(pool.clone(), &old, 3600);
        before
            .remember("scope-a", "<PERSON_1>", "PERSON", "Ada Lovelace")
            .await
            .unwrap();
        // A fresh store under the new key (no cache) cannot read it yet.
        let after = MappingStore::new(pool.clone(), &new, 3600);
        assert_eq!(
            after.lookup("scope-a", "<PERSON_1>").await.unwrap(),
            Lookup::Unknown
        );

        let done = rotate(&pool, &old, &new).await.unwrap();
        assert_eq!(
            done,
            Rotated {
                resealed: 1,
                current: 0,
                unreadable: 0
            }
        );
        let after = MappingStore::new(pool.clone(), &new, 3600);
        assert_eq!(
            after.lookup("scope-a", "<PERSON_1>").await.unwrap(),
            Lookup::Found("Ada Lovelace".into())
        );
        // Running it again changes nothing; a third key reads nothing.
        let again = rotate(&pool, &old, &new).await.unwrap();
        assert_eq!(
            again,
            Rotated {
                resealed: 0,
                current: 1,
                unreadable: 0
            }
        );
        let stray = rotate(&pool, &old, &MasterKey::from_bytes([3; 32]))
            .await
            .unwrap();
        assert_eq!(stray.unreadable, 1);
    }
}
