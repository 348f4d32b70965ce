//! The gateway's master key and what is derived from it.
//!
//! One 32-byte secret (`MCPGATE_KEY`, else `<data_dir>/gateway.key` created
//! 0600 on first start). Every use gets a key of its own through HKDF-SHA256
//! with a purpose label, so a confirmation-token key never doubles as an
//! encryption key. [`seal`]/[`open`] are AES-256-GCM with a random nonce.

use std::path::Path;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

const KEY_FILE: &str = "gateway.key";
const NONCE_LEN: usize = 12;

/// The master key. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={})", self.id())
    }
}

impl MasterKey {
    /// `MCPGATE_SECRET_KEY` (or its older name `MCPGATE_KEY`; 64 hex
    /// characters) if set, else `<data_dir>/gateway.key`, created with fresh
    /// randomness (mode 0600) on first start.
    pub fn load(data_dir: &Path) -> Result<MasterKey, String> {
        Self::load_with(data_dir, true)
    }

    /// The key for this config. Gateways sharing a PostgreSQL store must share
    /// one key, so there it is never generated: it must be given.
    pub fn for_config(config: &crate::config::Config) -> Result<MasterKey, String> {
        Self::load_with(&config.data_dir, config.database.is_none())
    }

    fn load_with(data_dir: &Path, may_create: bool) -> Result<MasterKey, String> {
        for var in ["MCPGATE_SECRET_KEY", "MCPGATE_KEY"] {
            if let Ok(hex_key) = std::env::var(var) {
                return decode_key(hex_key.trim())
                    .map(MasterKey)
                    .map_err(|e| format!("{var}: {e}"));
            }
        }
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => decode_key(text.trim())
                .map(MasterKey)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => Err(format!(
                "gateways sharing a PostgreSQL store need one key: set MCPGATE_SECRET_KEY \
                 (64 hex characters, the same on every gateway) or put it in {}",
                path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(&path, &hex::encode(key))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(MasterKey(key))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// A key given as 64 hex characters (e.g. `MCPGATE_KEY_PREVIOUS`).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        decode_key(text.trim()).map(MasterKey)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key for one purpose (`"confirmation tokens v1"`, `"pii scope v1:<scope>"`…).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"mcpgate"), &self.0);
        let mut out = [0u8; 32];
        hk.expand(purpose.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// A public identifier of this key (for rotation bookkeeping): the first
    /// 8 bytes of SHA-256 over a derived value, never the key itself.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.derive("key id v1"));
        hex::encode(&digest[..8])
    }
}

/// Encrypt `plaintext` under `key`; `aad` is authenticated, not stored.
/// Output: nonce ‖ ciphertext+tag.
pub fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(key.into());
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let nonce = Nonce::from(nonce_bytes);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&sealed);
    out
}

/// Decrypt what [`seal`] produced; `None` if the key, `aad` or bytes differ.
pub fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce_bytes, body) = sealed.split_at(NONCE_LEN);
    let nonce_bytes: [u8; NONCE_LEN] = nonce_bytes.try_into().ok()?;
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(nonce_bytes), Payload { msg: body, aad })
        .ok()
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text).map_err(|_| "expected 64 hex characters".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "expected 64 hex characters (32 bytes)".to_string())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose() {
        let master = MasterKey::from_bytes([7; 32]);
        assert_ne!(master.derive("a"), master.derive("b"));
        assert_eq!(master.derive("a"), master.derive("a"));
    }

    #[test]
    fn sealed_bytes_open_only_with_the_same_key_and_aad() {
        let key = [1u8; 32];
        let sealed = seal(&key, b"secret", b"user:a");
        assert_eq!(
            open(&key, &sealed, b"user:a").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(open(&key, &sealed, b"user:b"), None);
        assert_eq!(open(&[2u8; 32], &sealed, b"user:a"), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key, &tampered, b"user:a"), None);
        assert_eq!(open(&key, &sealed[..5], b"user:a"), None);
    }

    #[test]
    fn the_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        // The test does not set MCPGATE_KEY; if the environment does, skip.
        if std::env::var_os("MCPGATE_KEY").is_some() {
            return;
        }
        let first = MasterKey::load(dir.path()).unwrap();
        let second = MasterKey::load(dir.path()).unwrap();
        assert_eq!(first.0, second.0);
        assert!(!format!("{first:?}").contains(&hex::encode(first.0)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
