//! Why the gateway said no: one enum of every reason a caller can see. Each
//! reason has a stable code (the `data.reason` of a JSON-RPC error, the
//! `reason` of an HTTP problem, the audit row's `reason_code`), and its class
//! decides the JSON-RPC code and the HTTP status. The README's error table is
//! generated from here (`tests/reasons.rs` holds them equal).

use std::fmt;

/// How a reason surfaces: the JSON-RPC code and HTTP status follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The request is malformed or names nothing: JSON-RPC -32602, HTTP 400.
    Invalid,
    /// Governance refused it: -32001, HTTP 403.
    Refused,
    /// The upstream failed: -32002, HTTP 502.
    Upstream,
    /// The audit log cannot be written, so nothing runs: -32003, HTTP 503.
    Audit,
    /// The gateway cannot serve it right now: -32004, HTTP 503.
    Unavailable,
    /// No valid credential on an HTTP route: HTTP 401 (never a JSON-RPC error).
    Unauthenticated,
    /// A token exchange (`/oauth/token`) refusal: an RFC 6749 §5.2 error.
    Exchange,
    /// An admin API or connect-page refusal (plain HTTP problem).
    Http,
}

impl Class {
    pub const fn jsonrpc_code(self) -> i32 {
        match self {
            Class::Invalid => -32602,
            Class::Upstream => -32002,
            Class::Audit => -32003,
            Class::Unavailable => -32004,
            Class::Refused | Class::Unauthenticated | Class::Exchange | Class::Http => -32001,
        }
    }

    /// Classes that reach MCP clients as JSON-RPC errors (the README table).
    pub const JSONRPC: [Class; 5] = [
        Class::Invalid,
        Class::Refused,
        Class::Upstream,
        Class::Audit,
        Class::Unavailable,
    ];
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $class:ident; )*) => {
        /// Every refusal reason of the gateway.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $variant, )*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// The stable, machine-readable code.
            pub const fn code(self) -> &'static str {
                match self { $( Reason::$variant => $code, )* }
            }

            pub const fn class(self) -> Class {
                match self { $( Reason::$variant => Class::$class, )* }
            }

            /// The reason with this code, if any.
            pub fn from_code(code: &str) -> Option<Reason> {
                match code { $( $code => Some(Reason::$variant), )* _ => None }
            }
        }
    };
}

reasons! {
    // What a tool call names or passes.
    UnknownTool = "unknown_tool", Invalid;
    UnknownAction = "unknown_action", Invalid;
    InvalidArguments = "invalid_arguments", Invalid;
    WrongTool = "wrong_tool", Invalid;
    /// A resource URI or prompt name that names no upstream's (see federation.rs).
    UnknownResource = "unknown_resource", Invalid;
    UnknownPrompt = "unknown_prompt", Invalid;

    // Access and policy.
    ServiceNotAllowed = "service_not_allowed", Refused;
    RiskNotAllowed = "risk_not_allowed", Refused;
    ReadOnlyMode = "read_only_mode", Refused;
    /// The person may, but the OAuth token's scope (`mcp:read`) does not
    /// cover it: HTTP 403 with a scope challenge, so the client can step up.
    InsufficientScope = "insufficient_scope", Refused;
    SessionCredentialMismatch = "session_credential_mismatch", Refused;

    // Write-safety.
    /// Not an error: recorded when a call waits for the human's answer.
    ConfirmationRequired = "confirmation_required", Refused;
    HeadlessCannotConfirm = "headless_cannot_confirm", Refused;
    ConfirmationMismatch = "confirmation_mismatch", Refused;
    ConfirmationExpired = "confirmation_expired", Refused;
    ConfirmationReused = "confirmation_reused", Refused;
    ConfirmationMalformed = "confirmation_malformed", Refused;
    ConfirmationDeclined = "confirmation_declined", Refused;
    ConfirmationUnanswered = "confirmation_unanswered", Refused;

    // Policy hooks.
    HookDenied = "hook_denied", Refused;
    HookFailed = "hook_failed", Refused;
    EndpointNotAllowed = "endpoint_not_allowed", Refused;
    HookValidationFailed = "hook_validation_failed", Refused;
    InvalidHook = "invalid_hook", Invalid;
    UnknownHook = "unknown_hook", Invalid;
    HooksNotForWorkflows = "hooks_not_for_workflows", Refused;
    /// `gateway_my_activity` answers a person, not a workflow acting for them.
    ActivityNotForWorkflows = "activity_not_for_workflows", Refused;

    // PII.
    UnknownPseudonym = "unknown_pseudonym", Refused;
    PseudonymOtherScope = "pseudonym_other_scope", Refused;
    PiiScanFailed = "pii_scan_failed", Refused;

    // Delegation grants, as a call under one sees them.
    ServiceNotDeclared = "service_not_declared", Refused;
    RiskNotGranted = "risk_not_granted", Refused;
    OutsideOwnerScope = "outside_owner_scope", Refused;
    GrantExpired = "grant_expired", Refused;
    GrantRevoked = "grant_revoked", Refused;
    JobFinished = "job_finished", Refused;
    GrantEnded = "grant_ended", Refused;

    // The upstream.
    UpstreamTimeout = "upstream_timeout", Upstream;
    UpstreamTransport = "upstream_transport", Upstream;
    UpstreamError = "upstream_error", Upstream;

    AuditUnavailable = "audit_unavailable", Audit;

    // The gateway cannot serve it now.
    ShuttingDown = "shutting_down", Unavailable;
    SessionUnavailable = "session_unavailable", Unavailable;
    /// Not connected yet (starting or restarting), or its connector is gone.
    UpstreamUnavailable = "upstream_unavailable", Unavailable;
    ConfirmationUnavailable = "confirmation_unavailable", Unavailable;
    ConfirmationStoreUnavailable = "confirmation_store_unavailable", Unavailable;
    PiiStoreUnavailable = "pii_store_unavailable", Unavailable;
    GrantUnavailable = "grant_unavailable", Unavailable;
    HooksUnavailable = "hooks_unavailable", Unavailable;
    /// Recorded, never answered: the gateway stopped (a crash, `kill -9`)
    /// after the write-ahead row and before the outcome.
    GatewayInterrupted = "gateway_interrupted", Unavailable;

    // HTTP authentication (`/mcp`, the admin API, connect pages).
    Unauthenticated = "unauthenticated", Unauthenticated;
    InvalidToken = "invalid_token", Unauthenticated;
    UnknownUser = "unknown_user", Unauthenticated;
    /// A grant token could not be checked because the store did not answer.
    TemporarilyUnavailable = "temporarily_unavailable", Unauthenticated;

    // Token exchange (RFC 8693) and Windmill verification.
    InvalidRequest = "invalid_request", Exchange;
    UnsupportedGrantType = "unsupported_grant_type", Exchange;
    InvalidActorToken = "invalid_actor_token", Exchange;
    ActorNotServiceAccount = "actor_not_service_account", Exchange;
    DelegationDisabled = "delegation_disabled", Exchange;
    WorkspaceNotRegistered = "workspace_not_registered", Exchange;
    NoDeclaration = "no_declaration", Exchange;
    InvalidDeclaration = "invalid_declaration", Exchange;
    FlowNotAllowed = "flow_not_allowed", Exchange;
    OwnerUnknown = "owner_unknown", Exchange;
    HighRiskNotApproved = "high_risk_not_approved", Exchange;
    GrantsUnavailable = "grants_unavailable", Exchange;
    StorageUnavailable = "storage_unavailable", Exchange;
    WindmillUnavailable = "windmill_unavailable", Exchange;
    InvalidJobToken = "invalid_job_token", Exchange;
    NotAJobToken = "not_a_job_token", Exchange;
    JobTokenMismatch = "job_token_mismatch", Exchange;
    JobTokenRejected = "job_token_rejected", Exchange;
    JobTokenExpired = "job_token_expired", Exchange;
    JobIdentityMismatch = "job_identity_mismatch", Exchange;
    JobMismatch = "job_mismatch", Exchange;
    JobNotFound = "job_not_found", Exchange;
    JobNotRunning = "job_not_running", Exchange;
    PreviewJob = "preview_job", Exchange;
    OwnerNotWorkspaceUser = "owner_not_workspace_user", Exchange;
    OwnerDisabled = "owner_disabled", Exchange;

    // The authorization server of `/mcp` (OAuth 2.1 for AI clients):
    // `/oauth/authorize`, `/oauth/token`, `/oauth/register`, `/oauth/revoke`.
    InvalidClient = "invalid_client", Exchange;
    InvalidRedirectUri = "invalid_redirect_uri", Exchange;
    UnsupportedResponseType = "unsupported_response_type", Exchange;
    PkceRequired = "pkce_required", Exchange;
    PkcePlainRefused = "pkce_plain_refused", Exchange;
    PkceMismatch = "pkce_mismatch", Exchange;
    InvalidCode = "invalid_code", Exchange;
    /// A used code presented again: the tokens minted from it are revoked.
    CodeReplayed = "code_replayed", Exchange;
    InvalidRefreshToken = "invalid_refresh_token", Exchange;
    /// A rotated refresh token presented again: its whole family is revoked.
    RefreshReused = "refresh_reused", Exchange;
    /// RFC 8707: the `resource` is not this gateway's `/mcp`.
    InvalidTarget = "invalid_target", Exchange;
    InvalidClientMetadata = "invalid_client_metadata", Exchange;
    /// Client ID Metadata Documents: where and what the gateway will fetch.
    ClientMetadataForbiddenAddress = "client_metadata_forbidden_address", Exchange;
    ClientMetadataTooLarge = "client_metadata_too_large", Exchange;
    ClientMetadataMismatch = "client_metadata_mismatch", Exchange;
    ClientMetadataUnavailable = "client_metadata_unavailable", Exchange;
    ClientMetadataInvalid = "client_metadata_invalid", Exchange;
    /// A scope this server does not grant, or wider than the sign-in's.
    InvalidScope = "invalid_scope", Exchange;
    /// Too many requests from one address to an OAuth endpoint: HTTP 429.
    RateLimited = "rate_limited", Exchange;
    /// An access token minted for another resource than this `/mcp`.
    WrongAudience = "wrong_audience", Unauthenticated;

    // The admin API and the connect pages.
    NotAdmin = "not_admin", Http;
    NotFound = "not_found", Http;
    InvalidBody = "invalid_body", Http;
    InvalidPattern = "invalid_pattern", Http;
    InvalidInstance = "invalid_instance", Http;
    InvalidApproval = "invalid_approval", Http;
    InvalidHooks = "invalid_hooks", Http;
    UnknownService = "unknown_service", Http;
    BadConfig = "bad_config", Http;
    InvalidState = "invalid_state", Http;
    ConsentDenied = "consent_denied", Http;
    ConnectFailed = "connect_failed", Http;
    /// Sign-in at the gateway (a one-time link): unknown, used or expired.
    SigninLinkInvalid = "signin_link_invalid", Http;
    /// The person is not a configured user, or is a service account.
    SigninRefused = "signin_refused", Http;
    /// The consent form is forged, stale or from another browser.
    InvalidConsent = "invalid_consent", Http;
    /// Sign-in through the company's OpenID provider.
    IdpUnavailable = "idp_unavailable", Http;
    IdpDenied = "idp_denied", Http;
    IdTokenInvalid = "id_token_invalid", Http;
    IdTokenNonceMismatch = "id_token_nonce_mismatch", Http;
    EmailNotVerified = "email_not_verified", Http;
    CsrfMismatch = "csrf_mismatch", Http;
}

impl Reason {
    pub const fn jsonrpc_code(self) -> i32 {
        self.class().jsonrpc_code()
    }

    /// The HTTP status of a refusal with this reason.
    pub const fn http_status(self) -> u16 {
        match self.class() {
            Class::Invalid => 400,
            Class::Refused => 403,
            Class::Upstream => 502,
            Class::Audit | Class::Unavailable => 503,
            Class::Unauthenticated => 401,
            Class::Exchange => self.oauth_status(),
            Class::Http => match self {
                Reason::NotAdmin
                | Reason::CsrfMismatch
                | Reason::SigninRefused
                | Reason::InvalidConsent
                | Reason::IdpDenied
                | Reason::IdTokenInvalid
                | Reason::IdTokenNonceMismatch
                | Reason::EmailNotVerified => 403,
                Reason::IdpUnavailable => 502,
                Reason::NotFound | Reason::UnknownService => 404,
                Reason::ConnectFailed => 502,
                _ => 400,
            },
        }
    }

    /// The RFC 6749 §5.2 `error` a token exchange answers with.
    pub const fn oauth_error(self) -> &'static str {
        match self {
            Reason::InvalidRequest | Reason::NoDeclaration | Reason::InvalidDeclaration => {
                "invalid_request"
            }
            Reason::UnsupportedGrantType => "unsupported_grant_type",
            Reason::InvalidClient
            | Reason::ClientMetadataForbiddenAddress
            | Reason::ClientMetadataTooLarge
            | Reason::ClientMetadataMismatch
            | Reason::ClientMetadataUnavailable
            | Reason::ClientMetadataInvalid => "invalid_client",
            Reason::InvalidRedirectUri => "invalid_redirect_uri",
            Reason::UnsupportedResponseType => "unsupported_response_type",
            Reason::PkceRequired | Reason::PkcePlainRefused => "invalid_request",
            Reason::InvalidTarget => "invalid_target",
            Reason::InvalidClientMetadata => "invalid_client_metadata",
            Reason::ConsentDenied => "access_denied",
            Reason::InvalidActorToken
            | Reason::ActorNotServiceAccount
            | Reason::DelegationDisabled
            | Reason::WorkspaceNotRegistered
            | Reason::FlowNotAllowed => "unauthorized_client",
            Reason::HighRiskNotApproved | Reason::OutsideOwnerScope | Reason::InvalidScope => {
                "invalid_scope"
            }
            // No RFC 6749 code fits a 429; this one tells a client to retry later.
            Reason::RateLimited => "temporarily_unavailable",
            Reason::WindmillUnavailable
            | Reason::GrantsUnavailable
            | Reason::StorageUnavailable
            | Reason::AuditUnavailable => "temporarily_unavailable",
            _ => "invalid_grant",
        }
    }

    /// The HTTP status RFC 6749 gives [`Self::oauth_error`].
    pub const fn oauth_status(self) -> u16 {
        if matches!(self, Reason::RateLimited) {
            return 429;
        }
        match self.oauth_error().as_bytes() {
            b"unauthorized_client" | b"invalid_client" => 401,
            b"temporarily_unavailable" => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The README's JSON-RPC error table, generated from [`Reason`].
pub fn jsonrpc_table() -> String {
    let mut out = String::from("| code | reasons |\n|---|---|\n");
    for class in Class::JSONRPC {
        let codes: Vec<String> = Reason::ALL
            .iter()
            .filter(|r| r.class() == class)
            .map(|r| format!("`{}`", r.code()))
            .collect();
        out.push_str(&format!(
            "| {} | {} |\n",
            class.jsonrpc_code(),
            codes.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.code()), "{} twice", reason.code());
            assert_eq!(Reason::from_code(reason.code()), Some(*reason));
        }
    }

    #[test]
    fn classes_decide_codes_and_statuses() {
        for (reason, jsonrpc, http) in [
            (Reason::UnknownTool, -32602, 400),
            (Reason::RiskNotAllowed, -32001, 403),
            (Reason::UpstreamTimeout, -32002, 502),
            (Reason::AuditUnavailable, -32003, 503),
            (Reason::ShuttingDown, -32004, 503),
            (Reason::InvalidToken, -32001, 401),
            (Reason::NotAdmin, -32001, 403),
            (Reason::DelegationDisabled, -32001, 401),
            (Reason::HighRiskNotApproved, -32001, 400),
            (Reason::WindmillUnavailable, -32001, 503),
            (Reason::JobNotRunning, -32001, 400),
        ] {
            assert_eq!(reason.jsonrpc_code(), jsonrpc, "{reason}");
            assert_eq!(reason.http_status(), http, "{reason}");
        }
        assert_eq!(Reason::OutsideOwnerScope.oauth_error(), "invalid_scope");
        assert_eq!(Reason::JobMismatch.oauth_error(), "invalid_grant");
        assert_eq!(Reason::InvalidScope.oauth_error(), "invalid_scope");
        assert_eq!(Reason::RateLimited.oauth_status(), 429);
        assert_eq!(Reason::InsufficientScope.http_status(), 403);
    }
}

/// A refusal: its reason and a sentence for the human reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        self.reason.code()
    }

    /// The JSON-RPC error an MCP client receives: `data.reason` is the code.
    pub fn into_mcp(self) -> rmcp::ErrorData {
        rmcp::ErrorData::new(
            rmcp::model::ErrorCode(self.reason.jsonrpc_code()),
            self.message,
            Some(serde_json::json!({ "reason": self.reason.code() })),
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.message)
    }
}

impl std::error::Error for Refusal {}
