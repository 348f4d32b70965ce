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
}

impl Principal {
    pub fn access_to(&self, service: &str) -> Option<Risk> {
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
