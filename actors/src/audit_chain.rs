//! The audit log's tamper evidence: every write the audit writer commits is
//! an entry of a hash chain, and the chain's head is signed now and then.
//!
//! - An **entry** is the canonical JSON of what was written: a call's
//!   decision (the whole row as first written), its outcome (the columns
//!   that complete it), or a mark (a chain's genesis, a retention prune, an
//!   outcome that found no open row). Decisions and outcomes are kept in
//!   the row itself; marks in `audit_chain_marks`.
//! - Entry `n`'s hash is `SHA-256(hash(n-1) ‖ entry)`, from 32 zero bytes,
//!   so each hash commits to every entry before it, in order.
//! - A **checkpoint** signs `(origin, size, head hash)` with Ed25519 in the
//!   C2SP signed-note shape, so a verifier holding only the public key can
//!   tell that nothing up to `size` was changed, removed, added or moved.
//!   (The tlog-checkpoint format carries a Merkle root; here it is the head
//!   of a hash chain, which needs the whole segment to verify — an export
//!   carries it.)
//!
//! Each writer start opens a chain of its own (a fresh id), whose genesis
//! names the heads of the chains before it: several gateways on one
//! PostgreSQL each append to their own chain, never racing for a sequence,
//! and a chain cannot be removed whole without the next genesis noticing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{AuditDecision, AuditOutcome};

/// The hash before a chain's first entry.
pub const ZERO: [u8; 32] = [0; 32];

/// The hash of `entry` following `prev`.
pub fn next_hash(prev: &[u8; 32], entry: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(entry.as_bytes());
    hasher.finalize().into()
}

pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// A call's decision as the chain commits to it: the row as first written.
/// Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEntry {
    pub kind: String,
    pub call_id: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub subject: String,
    pub actor: String,
    pub session: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub service: Option<String>,
    pub tool: String,
    pub action: Option<String>,
    pub risk: Option<String>,
    pub decision: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub args_sha256: String,
    pub grant_id: Option<String>,
    pub job_id: Option<String>,
    pub pii_rehydrated: Option<i64>,
    pub pii_types: Option<String>,
}

impl DecisionEntry {
    pub fn of(d: &AuditDecision) -> Self {
        Self {
            kind: "decision".into(),
            call_id: d.call_id.clone(),
            started_at: d.at.clone(),
            completed_at: d.completed.then(|| d.at.clone()),
            subject: d.subject.clone(),
            actor: d.actor.clone(),
            session: d.session.clone(),
            client_name: d.client_name.clone(),
            client_version: d.client_version.clone(),
            service: d.service.clone(),
            tool: d.tool.clone(),
            action: d.action.clone(),
            risk: d.risk.map(|r| r.as_str().to_owned()),
            decision: d.decision.as_str().to_owned(),
            reason_code: d.reason_code.clone(),
            reason: d.reason.clone(),
            args_sha256: d.args_sha256.clone(),
            grant_id: d.grant_id.clone(),
            job_id: d.job_id.clone(),
            pii_rehydrated: d.pii_rehydrated,
            pii_types: d.pii_types.clone(),
        }
    }
}

/// The columns an outcome sets on its row (`reason_code`/`reason` only when
/// given: the row keeps the decision's otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEntry {
    pub kind: String,
    pub call_id: String,
    pub completed_at: String,
    pub decision: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub upstream_status: String,
    pub latency_ms: Option<f64>,
}

impl OutcomeEntry {
    pub fn of(o: &AuditOutcome) -> Self {
        Self {
            kind: "outcome".into(),
            call_id: o.call_id.clone(),
            completed_at: o.at.clone(),
            decision: o.decision.as_str().to_owned(),
            reason_code: o.reason_code.clone(),
            reason: o.reason.clone(),
            upstream_status: o.upstream_status.clone(),
            latency_ms: o.latency_ms,
        }
    }
}

/// A row written before the log had chains, as it stood when a chain first
/// took it in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdoptedEntry {
    pub kind: String,
    pub call_id: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub subject: String,
    pub actor: String,
    pub session: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub service: Option<String>,
    pub tool: String,
    pub action: Option<String>,
    pub risk: Option<String>,
    pub decision: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub args_sha256: String,
    pub grant_id: Option<String>,
    pub job_id: Option<String>,
    pub pii_rehydrated: Option<i64>,
    pub pii_types: Option<String>,
    pub upstream_status: Option<String>,
    pub latency_ms: Option<f64>,
}

/// Where a chain's head stood, as a later genesis names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub chain: String,
    /// Entries in the chain (the head is entry `size - 1`).
    pub size: i64,
    pub hash: String,
}

/// A chain's first entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenesisEntry {
    pub kind: String,
    pub chain: String,
    pub started_at: String,
    /// The heads of the chains written before this one.
    pub witness: Vec<Head>,
}

/// Retention removed `chain`'s entries before `size`; the checkpoint at
/// `size` (kept) vouches for what follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneEntry {
    pub kind: String,
    pub chain: String,
    pub size: i64,
    pub hash: String,
    /// The retention cutoff: rows started before it were removed.
    pub before: String,
}

/// The encoding every entry is hashed in.
pub fn encode<T: Serialize>(entry: &T) -> String {
    serde_json::to_string(entry).expect("audit entries serialize")
}

/// The Ed25519 key that signs checkpoints, named as notes name keys.
#[derive(Clone)]
pub struct CheckpointKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointKey({})", self.verifier().to_vkey())
    }
}

impl CheckpointKey {
    /// From a 32-byte seed (the gateway derives it from its master key).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Self {
        Self {
            name: name.to_owned(),
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// A signed note: `<origin>\n<size>\n<base64 hash>\n\n— <name> <base64(id ‖ sig)>\n`.
    pub fn sign(&self, origin: &str, size: i64, hash: &[u8; 32]) -> String {
        let body = format!("{origin}\n{size}\n{}\n", B64.encode(hash));
        let signature = self.key.sign(body.as_bytes());
        let mut blob = self.verifier().key_id().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// A public key that checks checkpoints.
#[derive(Clone, Debug)]
pub struct VerifierKey {
    name: String,
    key: ed25519_dalek::VerifyingKey,
}

/// What a checkpoint note says, once its signature checks out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: i64,
    pub hash: [u8; 32],
}

impl VerifierKey {
    /// The key's name (checkpoint origins are `<name>/<chain id>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note key id: the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ key).
    fn key_id(&self) -> [u8; 4] {
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        hasher.update(b"\n\x01");
        hasher.update(self.key.as_bytes());
        let digest = hasher.finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    }

    /// The verifier key in the note format: `<name>+<hex id>+<base64(0x01 ‖ key)>`.
    pub fn to_vkey(&self) -> String {
        let mut blob = vec![0x01];
        blob.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            B64.encode(blob)
        )
    }

    pub fn parse(vkey: &str) -> Result<Self, String> {
        let bad = || format!("not a verifier key (<name>+<hex id>+<base64 key>): {vkey:?}");
        let mut parts = vkey.trim().rsplitn(3, '+');
        let (key, id, name) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        let blob = B64.decode(key).map_err(|_| bad())?;
        if blob.len() != 33 || blob[0] != 0x01 {
            return Err(format!("{}: only Ed25519 keys (type 0x01) are used", bad()));
        }
        let bytes: [u8; 32] = blob[1..].try_into().map_err(|_| bad())?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        let verifier = Self {
            name: name.to_owned(),
            key,
        };
        if hex::encode(verifier.key_id()) != id {
            return Err(format!("{}: the key id does not match the key", bad()));
        }
        Ok(verifier)
    }

    /// The checkpoint `note` states, if one of its signatures is this key's
    /// and valid.
    pub fn open(&self, note: &str) -> Option<Checkpoint> {
        let (body, signatures) = note.split_once("\n\n")?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let origin = lines.next()?.to_owned();
        let size = lines.next()?.parse().ok()?;
        let hash: [u8; 32] = B64.decode(lines.next()?).ok()?.try_into().ok()?;
        if lines.next().is_some() {
            return None;
        }
        let prefix = format!("\u{2014} {} ", self.name);
        let signed = signatures.lines().any(|line| {
            let Some(blob) = line.strip_prefix(&prefix) else {
                return false;
            };
            let Ok(blob) = B64.decode(blob) else {
                return false;
            };
            if blob.len() != 68 || blob[..4] != self.key_id() {
                return false;
            }
            let Ok(signature) = ed25519_dalek::Signature::from_slice(&blob[4..]) else {
                return false;
            };
            self.key.verify(body.as_bytes(), &signature).is_ok()
        });
        signed.then_some(Checkpoint { origin, size, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_only() {
        let key = CheckpointKey::from_seed("mcpgate/audit", [7; 32]);
        let hash = next_hash(&ZERO, "{}");
        let note = key.sign("mcpgate/audit/c1", 3, &hash);
        let verifier = VerifierKey::parse(&key.verifier().to_vkey()).unwrap();
        assert_eq!(
            verifier.open(&note),
            Some(Checkpoint {
                origin: "mcpgate/audit/c1".into(),
                size: 3,
                hash
            })
        );
        // Any change to the signed text, or another key, and it does not open.
        assert_eq!(verifier.open(&note.replace("\n3\n", "\n4\n")), None);
        let other = CheckpointKey::from_seed("mcpgate/audit", [8; 32]).verifier();
        assert_eq!(other.open(&note), None);
        assert!(VerifierKey::parse("mcpgate/audit+00000000+AQ==").is_err());
    }
}
