//! Stable, unguessable, typed pseudonyms. Within one scope (a subject by
//! default) the same value always maps to the same pseudonym: a keyed HMAC
//! over the normalized value, with a key derived per scope from the gateway's
//! master key, so pseudonyms are unlinkable across scopes and cannot be
//! recomputed without the key.

use std::sync::LazyLock;

use hmac::{Hmac, KeyInit, Mac};
use regex::Regex;
use sha2::Sha256;

use super::detect::Entity;
use crate::keys::MasterKey;

/// Hex characters of the HMAC in a pseudonym (48 bits).
const TAG_LEN: usize = 12;
const EMAIL_DOMAIN: &str = "pseudonym.invalid";

/// Pseudonyms as they appear in text, for rehydration.
pub static PSEUDONYM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<(?:EMAIL|PHONE|IBAN|CARD|IP|PERSON|CUSTOM)_[0-9a-f]{12}>|\bperson-[0-9a-f]{12}@pseudonym\.invalid\b")
        .expect("pseudonym regex")
});

/// The keys of one scope.
pub struct ScopeKeys {
    /// Identifies the scope in the store without naming the subject.
    pub scope_id: String,
    tag_key: [u8; 32],
}

impl ScopeKeys {
    pub fn new(master: &MasterKey, scope: &str) -> Self {
        let scope = scope.to_ascii_lowercase();
        let tag_key = master.derive(&format!("pii scope v1:{scope}"));
        let id_key = master.derive("pii scope id v1");
        let mut mac = Hmac::<Sha256>::new_from_slice(&id_key).expect("any key length");
        mac.update(scope.as_bytes());
        Self {
            scope_id: hex::encode(&mac.finalize().into_bytes()[..16]),
            tag_key,
        }
    }

    pub fn pseudonym(&self, entity: Entity, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.tag_key).expect("any key length");
        mac.update(entity.label().as_bytes());
        mac.update(b":");
        mac.update(normalize(entity, value).as_bytes());
        let tag = hex::encode(mac.finalize().into_bytes());
        let tag = &tag[..TAG_LEN];
        match entity {
            // Still looks like an address, so "reply to" flows keep working.
            Entity::Email => format!("person-{tag}@{EMAIL_DOMAIN}"),
            other => format!("<{}_{tag}>", other.label()),
        }
    }
}

/// The same person written differently is the same value.
pub fn normalize(entity: Entity, value: &str) -> String {
    match entity {
        Entity::Email => value.trim().to_ascii_lowercase(),
        Entity::Phone => {
            let plus = value.trim_start().starts_with('+');
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            if plus { format!("+{digits}") } else { digits }
        }
        Entity::Iban | Entity::Card => value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_uppercase(),
        Entity::Ip => value.trim().to_ascii_lowercase(),
        Entity::Person => value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        Entity::Custom(_) => value.trim().to_owned(),
    }
}

/// `ma***@example.com`, `+44 *** 58`, `****1111`: enough to recognise, not to use.
pub fn mask(entity: Entity, value: &str) -> String {
    match entity {
        Entity::Email => match value.split_once('@') {
            Some((local, domain)) => {
                let keep: String = local.chars().take(2).collect();
                format!("{keep}***@{domain}")
            }
            None => "***".into(),
        },
        _ => {
            let chars: Vec<char> = value.chars().collect();
            let tail: String = chars[chars.len().saturating_sub(2)..].iter().collect();
            format!("***{tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_within_a_scope_unlinkable_across() {
        let master = MasterKey::from_bytes([9; 32]);
        let alice = ScopeKeys::new(&master, "alice@example.com");
        let bob = ScopeKeys::new(&master, "bob@example.com");
        let a1 = alice.pseudonym(Entity::Email, "Marie@Example.com");
        let a2 = alice.pseudonym(Entity::Email, "marie@example.com ");
        assert_eq!(a1, a2);
        assert!(a1.starts_with("person-") && a1.ends_with("@pseudonym.invalid"));
        assert_ne!(a1, bob.pseudonym(Entity::Email, "marie@example.com"));
        assert_eq!(
            alice.pseudonym(Entity::Phone, "+44 20 7946 0958"),
            alice.pseudonym(Entity::Phone, "+44-20-7946-0958")
        );
        let person = alice.pseudonym(Entity::Person, "Marie Curie");
        assert!(PSEUDONYM.is_match(&person) && PSEUDONYM.is_match(&a1));
        assert_ne!(alice.scope_id, bob.scope_id);
        // Another master key, other pseudonyms: they cannot be recomputed.
        let other = ScopeKeys::new(&MasterKey::from_bytes([8; 32]), "alice@example.com");
        assert_ne!(other.pseudonym(Entity::Email, "marie@example.com"), a1);
        assert_eq!(
            mask(Entity::Email, "marie@example.com"),
            "ma***@example.com"
        );
    }
}
