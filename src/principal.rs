//! Who is calling: the authenticated credential resolved to a configured user.

use std::sync::Arc;

use crate::domain::{PrincipalKind, Risk};

use crate::config::UserConfig;
use crate::delegation::grants::LiveGrant;

/// Set on the request by the auth layer; every later stage reads it from there.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Id of the gateway token that authenticated the request (never the secret).
    pub credential_id: String,
    /// The person acted for.
    pub subject: String,
    /// The client or workflow that drives the call. For a plain user (or a
    /// service account) it is the user itself; delegation makes them differ.
    pub actor: String,
    pub user: Arc<UserConfig>,
    /// Set when the caller presented a delegated access token: the scope is
    /// the grant's, the user is the owner.
    pub grant: Option<Arc<LiveGrant>>,
    /// The most the credential's OAuth scope lets a call do (`mcp:read`:
    /// read); `None` when it does not narrow the access (gateway tokens,
    /// grants, `mcp`).
    pub scope_cap: Option<Risk>,
}

impl Principal {
    /// What this request may do on `service`: the access, capped by the scope.
    pub fn access_to(&self, service: &str) -> Option<Risk> {
        let access = self.unscoped_access_to(service)?;
        Some(self.scope_cap.map_or(access, |cap| cap.min(access)))
    }

    /// The access without the scope's cap: whether asking the person for a
    /// wider scope could help (step-up), or only their access could.
    pub fn unscoped_access_to(&self, service: &str) -> Option<Risk> {
        match &self.grant {
            Some(grant) => grant.scope.services.get(service).copied(),
            None => self.user.access_to(service),
        }
    }
}

impl Principal {
    /// A person at a client, a service account, or a workflow under a grant.
    pub fn kind(&self) -> PrincipalKind {
        match (&self.grant, self.user.service_account) {
            (Some(_), _) => PrincipalKind::Delegated,
            (None, true) => PrincipalKind::ServiceAccount,
            (None, false) => PrincipalKind::Person,
        }
    }
}
