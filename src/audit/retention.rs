//! Retention (`audit.retention`): old rows are removed at checkpoint
//! boundaries, so what remains still verifies.
//!
//! For each chain, the horizon is the largest signed size below which every
//! entry belongs to a removable row (completed, started before the cutoff)
//! or is a mark. A `prune` mark naming the horizon (size and the signed hash
//! there) is written and signed first — for every chain with a horizon, so
//! horizons survive their own marks being pruned — and only then are rows,
//! marks and checkpoints below it removed. The verifier starts each chain at
//! its horizon's hash and walks to the next checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actors::audit::{AuditMsg, AuditWrite};
use actors::audit_chain::PruneEntry;
use ractor::ActorRef;

use crate::storage::Db;

/// What one retention run removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows: u64,
    pub chains: usize,
}

/// Run [`prune`] every `every` (the first run at once) until the gateway drains.
pub fn spawn(
    pool: Db,
    registry: supervision::Registry,
    older_than: Duration,
    every: Duration,
    drain: std::sync::Arc<crate::drain::Drain>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if drain.is_draining() {
                return;
            }
            let Some(writer) = registry.get(super::WRITER_KEY) else {
                continue;
            };
            match prune(&pool, &writer, older_than).await {
                Ok(pruned) if pruned.rows > 0 || pruned.chains > 0 => tracing::info!(
                    rows = pruned.rows,
                    chains = pruned.chains,
                    "audit retention removed old rows at checkpoint boundaries"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit retention did not run"),
            }
        }
    });
}

/// Remove rows older than `older_than`, at checkpoint boundaries.
pub async fn prune(
    pool: &Db,
    writer: &ActorRef<AuditMsg>,
    older_than: Duration,
) -> Result<Pruned, String> {
    let cutoff = actors::format_rfc3339(time::OffsetDateTime::now_utc() - older_than);
    let store = |e: sqlx::Error| format!("audit retention: {e}");
    let horizons = current_horizons(pool).await.map_err(store)?;

    // Each chain's new horizon: the largest checkpoint at or below its first
    // entry that must stay.
    let chains: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT chain_id FROM audit_checkpoints ORDER BY chain_id")
            .fetch_all(pool)
            .await
            .map_err(store)?;
    // Each chain's first entry that must stay, in one pass over the log (no
    // index covers the chain columns: see migration 0015).
    let kept_from: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT chain, MIN(seq) FROM ( \
           SELECT chain_id AS chain, chain_seq AS seq FROM audit_events \
             WHERE chain_id IS NOT NULL AND NOT (started_at < $1 AND completed_at IS NOT NULL) \
           UNION ALL SELECT outcome_chain, outcome_seq FROM audit_events \
             WHERE outcome_chain IS NOT NULL AND NOT (started_at < $1 AND completed_at IS NOT NULL) \
         ) AS kept GROUP BY chain",
    )
    .bind(&cutoff)
    .fetch_all(pool)
    .await
    .map_err(store)?
    .into_iter()
    .collect();
    let mut advanced: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for chain in &chains {
        let keep_from = kept_from.get(chain).copied();
        let boundary: Option<(i64, String)> = sqlx::query_as(
            "SELECT size, hash FROM audit_checkpoints WHERE chain_id = $1 \
             AND ($2 IS NULL OR size <= $2) ORDER BY size DESC LIMIT 1",
        )
        .bind(chain)
        .bind(keep_from)
        .fetch_optional(pool)
        .await
        .map_err(store)?;
        if let Some((size, hash)) = boundary
            && horizons.get(chain).is_none_or(|(at, _)| *at < size)
        {
            advanced.insert(chain.clone(), (size, hash));
        }
    }
    if advanced.is_empty() {
        return Ok(Pruned::default());
    }

    // Every horizon, new and standing, restated and signed before anything goes.
    let mut all = horizons;
    all.extend(advanced.clone());
    for (chain, (size, hash)) in &all {
        let entry = PruneEntry {
            kind: "prune".into(),
            chain: chain.clone(),
            size: *size,
            hash: hash.clone(),
            before: cutoff.clone(),
        };
        actors::audit::write(writer, AuditWrite::Prune(entry))
            .await
            .map_err(|e| format!("audit retention: the prune mark was not written: {e}"))?;
    }
    let signed = matches!(
        writer.call(AuditMsg::Sign, None).await,
        Ok(ractor::rpc::CallResult::Success(true))
    );
    if !signed {
        return Err("audit retention: the prune marks could not be signed; nothing removed".into());
    }

    // Remove below the horizons, all in one transaction. A row goes only
    // when both its entries lie below their chains' horizons.
    let mut sql = String::from("WITH horizon (chain, size) AS (VALUES ");
    for i in 0..all.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(CAST(${} AS TEXT), CAST(${} AS BIGINT))",
            2 * i + 2,
            2 * i + 3
        ));
    }
    sql.push_str(
        ") DELETE FROM audit_events WHERE started_at < $1 AND completed_at IS NOT NULL \
         AND chain_seq < (SELECT size FROM horizon WHERE horizon.chain = audit_events.chain_id) \
         AND (outcome_chain IS NULL OR outcome_seq < \
              (SELECT size FROM horizon WHERE horizon.chain = audit_events.outcome_chain))",
    );
    let mut tx = crate::storage::begin_write(pool).await.map_err(store)?;
    // Only constant text and placeholders: nothing from the store is spliced in.
    let mut delete_rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&cutoff);
    for (chain, (size, _)) in &all {
        delete_rows = delete_rows.bind(chain).bind(size);
    }
    let rows = delete_rows
        .execute(&mut *tx)
        .await
        .map_err(store)?
        .rows_affected();
    for (chain, (size, _)) in &all {
        sqlx::query("DELETE FROM audit_chain_marks WHERE chain_id = $1 AND seq < $2")
            .bind(chain)
            .bind(size)
            .execute(&mut *tx)
            .await
            .map_err(store)?;
        sqlx::query("DELETE FROM audit_checkpoints WHERE chain_id = $1 AND size < $2")
            .bind(chain)
            .bind(size)
            .execute(&mut *tx)
            .await
            .map_err(store)?;
    }
    tx.commit().await.map_err(store)?;
    Ok(Pruned {
        rows,
        chains: advanced.len(),
    })
}

/// The horizons standing now: the largest size each chain was pruned to.
async fn current_horizons(pool: &Db) -> Result<BTreeMap<String, (i64, String)>, sqlx::Error> {
    let entries: Vec<String> =
        sqlx::query_scalar("SELECT entry FROM audit_chain_marks WHERE kind = 'prune'")
            .fetch_all(pool)
            .await?;
    let mut horizons: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for entry in entries {
        if let Ok(prune) = serde_json::from_str::<PruneEntry>(&entry) {
            let at = horizons
                .entry(prune.chain)
                .or_insert((prune.size, prune.hash.clone()));
            if at.0 < prune.size {
                *at = (prune.size, prune.hash);
            }
        }
    }
    Ok(horizons)
}
