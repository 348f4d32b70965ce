//! The decision of one tool call, before anything runs: resolve the tool to a
//! service and action, classify its risk, apply the read-only switch and the
//! caller's access, validate the arguments, and say whether the human must
//! confirm. Pure and synchronous: same inputs, same answer — no store, no
//! actor, no clock. The async stages (grant actor, hooks, confirmation, PII)
//! and the execution follow in `pipeline.rs`.

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::Value;

use crate::catalog::{ServiceCatalog, Surface, parse_tool_name};
use crate::config::{Expose, HeadlessConfirm};
use crate::domain::{PrincipalKind, Reason, Refusal, Risk, glob_match};
use crate::principal::Principal;

/// What the decision needs from the configuration.
pub struct Rules<'a> {
    pub config: &'a crate::config::Config,
    /// Argument rules of native catalogs (`classify_sql`), applied before the
    /// tool check because they say what an action really is.
    pub catalog_rules: &'a [crate::classify::ClassifyRule],
}

/// An allowed call, as far as policy goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub service: String,
    pub action: String,
    pub risk: Risk,
    /// The upstream's arguments (`action` taken out).
    pub arguments: JsonObject,
    /// The operator listed this write under `policy.confirm`.
    pub listed_for_confirmation: bool,
    /// Its catalog marks it as seen by others: a person confirms it.
    pub seen_by_others: bool,
}

/// A refused call, with what was established before the refusal (the
/// audit row names it).
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub refusal: Refusal,
    pub service: Option<String>,
    pub action: Option<String>,
    pub risk: Option<Risk>,
}

impl Refused {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            refusal: Refusal::new(reason, message),
            service: None,
            action: None,
            risk: None,
        }
    }
}

/// Decide `tool(arguments)` for `principal`. `catalog` answers a service's
/// current catalog (None: not connected yet).
pub fn decide(
    rules: &Rules<'_>,
    principal: &Principal,
    catalog: &dyn Fn(&str) -> Option<Arc<ServiceCatalog>>,
    tool: &str,
    arguments: &JsonObject,
) -> Result<Decided, Refused> {
    let (service, surface) = parse_tool_name(tool)
        .filter(|(service, _)| rules.config.services.contains_key(*service))
        .ok_or_else(|| Refused::new(Reason::UnknownTool, format!("there is no tool '{tool}'")))?;
    let mut known = Known {
        service: service.to_owned(),
        action: None,
        risk: None,
    };
    // Under a grant the grant's actor decides (with precise reasons), later.
    let allowed = match &principal.grant {
        Some(_) => Some(Risk::HighRisk),
        None => principal.access_to(service),
    };
    let Some(allowed) = allowed else {
        // Indistinguishable from a missing service for the caller, but audited precisely.
        return Err(known.refuse(
            Reason::ServiceNotAllowed,
            format!("{} has no access to service '{service}'", principal.subject),
        ));
    };
    let catalog = catalog(service).ok_or_else(|| {
        known.refuse(
            Reason::UpstreamUnavailable,
            format!(
                "service '{service}' is not connected yet (starting or restarting); retry shortly"
            ),
        )
    })?;
    let mut arguments = arguments.clone();
    let no_such_tool = || format!("there is no tool '{tool}'");
    let action_name = match &surface {
        Surface::Direct(direct) => {
            if catalog.expose != Expose::Tools {
                return Err(known.refuse(Reason::UnknownTool, no_such_tool()));
            }
            direct.clone()
        }
        Surface::ReadActions | Surface::WriteActions => {
            if catalog.expose != Expose::Actions {
                return Err(known.refuse(Reason::UnknownTool, no_such_tool()));
            }
            match arguments.remove("action") {
                Some(Value::String(action)) => action,
                Some(_) => {
                    return Err(known.refuse(Reason::InvalidArguments, "action: must be a string"));
                }
                None => {
                    return Err(known.refuse(
                        Reason::InvalidArguments,
                        format!("action: required; one of the actions listed in '{tool}'"),
                    ));
                }
            }
        }
    };
    known.action = Some(action_name.clone());
    let action = catalog.actions.get(&action_name).ok_or_else(|| {
        known.refuse(
            Reason::UnknownAction,
            format!("action: '{action_name}' is not an action of service '{service}'"),
        )
    })?;
    // What a catalog says an action's arguments make it (SQL statements)
    // counts before the tool check: DML/DDL never runs through
    // `<svc>_read_actions`, and can run through `<svc>_write_actions`.
    let (risk, catalog_raised) = crate::classify::classify(
        rules.catalog_rules,
        service,
        &action_name,
        &arguments,
        action.risk,
    );
    known.risk = Some(risk);
    let because = |why: &Option<String>| {
        why.as_deref()
            .map(|why| format!(" ({why})"))
            .unwrap_or_default()
    };
    match (&surface, risk) {
        (Surface::ReadActions, Risk::Write | Risk::HighRisk) => {
            return Err(known.refuse(
                Reason::WrongTool,
                format!(
                    "action: '{action_name}' is a {risk} action{}; call {service}_write_actions",
                    because(&catalog_raised)
                ),
            ));
        }
        (Surface::WriteActions, Risk::Read) => {
            return Err(known.refuse(
                Reason::WrongTool,
                format!("action: '{action_name}' is a read action; call {service}_read_actions"),
            ));
        }
        _ => {}
    }
    // Where the endpoint alone lies, the arguments decide (only ever upward).
    let policy = &rules.config.policy;
    let (risk, raised_by) =
        crate::classify::classify(&policy.classify, service, &action_name, &arguments, risk);
    let raised_by = raised_by.or(catalog_raised);
    known.risk = Some(risk);
    if policy.read_only && risk != Risk::Read {
        return Err(known.refuse(
            Reason::ReadOnlyMode,
            format!(
                "the gateway is read-only; '{action_name}' is a {risk} action{}",
                because(&raised_by)
            ),
        ));
    }
    if risk > allowed
        && let Some(cap) = principal.scope_cap
        && principal
            .unscoped_access_to(service)
            .is_some_and(|access| risk <= access)
    {
        return Err(known.refuse(
            Reason::InsufficientScope,
            format!(
                "'{action_name}' is a {risk} action{}; this sign-in's scope allows up to {cap}: \
                 authorize again with scope mcp",
                because(&raised_by)
            ),
        ));
    }
    if risk > allowed {
        return Err(known.refuse(
            Reason::RiskNotAllowed,
            format!(
                "{} may use {service} up to {allowed}; '{action_name}' is {risk}{}",
                principal.subject,
                because(&raised_by)
            ),
        ));
    }
    if let Err(problem) = action.validate(&arguments) {
        return Err(known.refuse(
            Reason::InvalidArguments,
            format!("{action_name}: {problem}"),
        ));
    }
    let qualified = format!("{service}.{action_name}");
    let listed_for_confirmation =
        risk == Risk::Write && policy.confirm.iter().any(|p| glob_match(p, &qualified));
    Ok(Decided {
        service: service.to_owned(),
        action: action_name,
        risk,
        arguments,
        listed_for_confirmation,
        seen_by_others: action.confirm && risk != Risk::Read,
    })
}

/// What is known so far, for the refusal's audit row.
struct Known {
    service: String,
    action: Option<String>,
    risk: Option<Risk>,
}

impl Known {
    fn refuse(&self, reason: Reason, message: impl Into<String>) -> Refused {
        Refused {
            refusal: Refusal::new(reason, message),
            service: Some(self.service.clone()),
            action: self.action.clone(),
            risk: self.risk,
        }
    }
}

/// Whether a decided call must wait for the human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Run it.
    NotNeeded,
    /// Ask the person at the client first.
    Ask,
    /// It needs a human, and the caller is headless.
    HeadlessCannotConfirm,
}

/// The write-safety rule: high_risk actions, writes the operator listed and
/// calls a hook asks about need the human's confirmation, and so do, for a
/// person at a client, effects others see (the catalog's `confirm`; a
/// workflow's were declared and approved with its flow). A grant's high_risk
/// was approved by an admin for that delegation (the confirmation a headless
/// job cannot give); `policy.headless_confirm: allow` lets headless callers
/// make the listed writes.
pub fn confirmation(
    decided: &Decided,
    kind: PrincipalKind,
    headless: HeadlessConfirm,
    hook_asks: bool,
) -> Confirmation {
    let needed = hook_asks
        || decided.risk == Risk::HighRisk
        || decided.listed_for_confirmation
        || (decided.seen_by_others && kind.is_interactive());
    if !needed {
        return Confirmation::NotNeeded;
    }
    if kind == PrincipalKind::Delegated && decided.risk == Risk::HighRisk && !hook_asks {
        return Confirmation::NotNeeded;
    }
    if kind.is_interactive() {
        return Confirmation::Ask;
    }
    if headless == HeadlessConfirm::Allow && decided.risk == Risk::Write && !hook_asks {
        return Confirmation::NotNeeded;
    }
    Confirmation::HeadlessCannotConfirm
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rmcp::model::{Tool, ToolAnnotations};
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    const CONFIG: &str = "\
policy:
  confirm: [\"svc.change\"]
services:
  svc:
    kind: mcp
    command: [x]
  direct:
    kind: mcp
    command: [x]
    expose: tools
users:
  - email: reader@example.com
    access: { svc: read, direct: read }
  - email: writer@example.com
    access: { svc: write, direct: write }
  - email: admin@example.com
    access: { \"*\": high_risk }
";

    fn tool(name: &str, annotations: ToolAnnotations) -> Tool {
        let Value::Object(schema) =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}})
        else {
            unreachable!()
        };
        Tool::new(name.to_owned(), format!("does {name}"), Arc::new(schema))
            .with_annotations(annotations)
    }

    fn catalogs(config: &Config) -> BTreeMap<String, Arc<ServiceCatalog>> {
        let tools = [
            tool("look", ToolAnnotations::new().read_only(true)),
            tool("change", ToolAnnotations::new()),
            tool("wipe", ToolAnnotations::new().destructive(true)),
        ];
        ["svc", "direct"]
            .into_iter()
            .map(|s| {
                let built =
                    ServiceCatalog::build(s, &config.services[s], &config.policy, 1, &tools);
                (s.to_owned(), Arc::new(built))
            })
            .collect()
    }

    /// `email`, or `email mcp:read` for a person signed in with a read-only scope.
    fn person(config: &Config, who: &str) -> Principal {
        let (email, scope_cap) = match who.split_once(' ') {
            Some((email, "mcp:read")) => (email, Some(Risk::Read)),
            _ => (who, None),
        };
        let user = Arc::new(config.user(email).unwrap().clone());
        Principal {
            credential_id: "tok".into(),
            subject: email.into(),
            actor: email.into(),
            user,
            grant: None,
            scope_cap,
        }
    }

    #[test]
    fn decisions_as_a_table() {
        let config = Config::parse(CONFIG, "c.yaml").unwrap();
        let built = catalogs(&config);
        let lookup = |s: &str| built.get(s).cloned();
        let rules = Rules {
            config: &config,
            catalog_rules: &[],
        };
        // (caller, tool, arguments, expected: Ok(risk) or Err(reason))
        let cases: Vec<(&str, &str, Value, Result<Risk, Reason>)> = vec![
            (
                "reader@example.com",
                "svc_read_actions",
                json!({"action": "look"}),
                Ok(Risk::Read),
            ),
            (
                "reader@example.com",
                "nope_read_actions",
                json!({"action": "look"}),
                Err(Reason::UnknownTool),
            ),
            (
                "reader@example.com",
                "svc_read_actions",
                json!({}),
                Err(Reason::InvalidArguments),
            ),
            (
                "reader@example.com",
                "svc_read_actions",
                json!({"action": 3}),
                Err(Reason::InvalidArguments),
            ),
            (
                "reader@example.com",
                "svc_read_actions",
                json!({"action": "ghost"}),
                Err(Reason::UnknownAction),
            ),
            (
                "reader@example.com",
                "svc_read_actions",
                json!({"action": "change"}),
                Err(Reason::WrongTool),
            ),
            (
                "writer@example.com",
                "svc_write_actions",
                json!({"action": "look"}),
                Err(Reason::WrongTool),
            ),
            (
                "reader@example.com",
                "svc_write_actions",
                json!({"action": "change"}),
                Err(Reason::RiskNotAllowed),
            ),
            (
                "writer@example.com",
                "svc_write_actions",
                json!({"action": "change"}),
                Ok(Risk::Write),
            ),
            (
                "writer@example.com",
                "svc_write_actions",
                json!({"action": "wipe"}),
                Err(Reason::RiskNotAllowed),
            ),
            (
                "admin@example.com",
                "svc_write_actions",
                json!({"action": "wipe"}),
                Ok(Risk::HighRisk),
            ),
            // A read-only scope: reads pass; what the person may do but the
            // scope does not cover asks for step-up; what they may not do
            // stays a plain refusal (a wider scope would not help).
            (
                "writer@example.com mcp:read",
                "svc_read_actions",
                json!({"action": "look"}),
                Ok(Risk::Read),
            ),
            (
                "writer@example.com mcp:read",
                "svc_write_actions",
                json!({"action": "change"}),
                Err(Reason::InsufficientScope),
            ),
            (
                "writer@example.com mcp:read",
                "direct__change",
                json!({"n": 1}),
                Err(Reason::InsufficientScope),
            ),
            (
                "admin@example.com mcp:read",
                "svc_write_actions",
                json!({"action": "wipe"}),
                Err(Reason::InsufficientScope),
            ),
            (
                "writer@example.com mcp:read",
                "svc_write_actions",
                json!({"action": "wipe"}),
                Err(Reason::RiskNotAllowed),
            ),
            (
                "reader@example.com mcp:read",
                "svc_write_actions",
                json!({"action": "change"}),
                Err(Reason::RiskNotAllowed),
            ),
            (
                "writer@example.com",
                "svc_write_actions",
                json!({"action": "change", "n": "x"}),
                Err(Reason::InvalidArguments),
            ),
            (
                "writer@example.com",
                "direct__change",
                json!({"n": 1}),
                Ok(Risk::Write),
            ),
            (
                "writer@example.com",
                "direct_read_actions",
                json!({"action": "look"}),
                Err(Reason::UnknownTool),
            ),
            (
                "writer@example.com",
                "svc__look",
                json!({}),
                Err(Reason::UnknownTool),
            ),
        ];
        for (who, tool, arguments, expected) in cases {
            let Value::Object(arguments) = arguments else {
                unreachable!()
            };
            let got = decide(&rules, &person(&config, who), &lookup, tool, &arguments)
                .map(|d| d.risk)
                .map_err(|r| r.refusal.reason);
            assert_eq!(got, expected, "{who} {tool} {arguments:?}");
        }
    }

    #[test]
    fn unconnected_services_and_the_read_only_switch_refuse() {
        let config = Config::parse(CONFIG, "c.yaml").unwrap();
        let rules = Rules {
            config: &config,
            catalog_rules: &[],
        };
        let Value::Object(args) = json!({"action": "look"}) else {
            unreachable!()
        };
        let admin = person(&config, "admin@example.com");
        let refused = decide(&rules, &admin, &|_| None, "svc_read_actions", &args).unwrap_err();
        assert_eq!(refused.refusal.reason, Reason::UpstreamUnavailable);
        assert_eq!(refused.service.as_deref(), Some("svc"));

        let read_only = Config::parse(
            &CONFIG.replace("policy:\n", "policy:\n  read_only: true\n"),
            "c.yaml",
        )
        .unwrap();
        let built = catalogs(&read_only);
        let rules = Rules {
            config: &read_only,
            catalog_rules: &[],
        };
        let Value::Object(args) = json!({"action": "change"}) else {
            unreachable!()
        };
        let refused = decide(
            &rules,
            &admin,
            &|s| built.get(s).cloned(),
            "svc_write_actions",
            &args,
        )
        .unwrap_err();
        assert_eq!(refused.refusal.reason, Reason::ReadOnlyMode);
        assert_eq!(refused.risk, Some(Risk::Write));
        assert_eq!(refused.action.as_deref(), Some("change"));
    }

    #[test]
    fn who_must_confirm() {
        let decided = |risk, listed| Decided {
            service: "svc".into(),
            action: "a".into(),
            risk,
            arguments: JsonObject::new(),
            listed_for_confirmation: listed,
            seen_by_others: false,
        };
        use Confirmation::*;
        use PrincipalKind::*;
        let refuse = HeadlessConfirm::Refuse;
        let allow = HeadlessConfirm::Allow;
        for (risk, listed, kind, headless, hook, expected) in [
            (Risk::Read, false, Person, refuse, false, NotNeeded),
            (Risk::Write, false, Person, refuse, false, NotNeeded),
            (Risk::Write, true, Person, refuse, false, Ask),
            (Risk::HighRisk, false, Person, refuse, false, Ask),
            (Risk::Read, false, Person, refuse, true, Ask),
            (Risk::HighRisk, false, Delegated, refuse, false, NotNeeded),
            (
                Risk::HighRisk,
                false,
                Delegated,
                refuse,
                true,
                HeadlessCannotConfirm,
            ),
            (
                Risk::Write,
                true,
                Delegated,
                refuse,
                false,
                HeadlessCannotConfirm,
            ),
            (Risk::Write, true, ServiceAccount, allow, false, NotNeeded),
            (
                Risk::Write,
                true,
                ServiceAccount,
                allow,
                true,
                HeadlessCannotConfirm,
            ),
            (
                Risk::HighRisk,
                false,
                ServiceAccount,
                allow,
                false,
                HeadlessCannotConfirm,
            ),
        ] {
            assert_eq!(
                confirmation(&decided(risk, listed), kind, headless, hook),
                expected,
                "{risk} listed={listed} {kind:?} {headless:?} hook={hook}"
            );
        }
        // Effects others see: a person confirms; a workflow's were declared.
        let seen = Decided {
            seen_by_others: true,
            ..decided(Risk::Write, false)
        };
        assert_eq!(confirmation(&seen, Person, refuse, false), Ask);
        assert_eq!(confirmation(&seen, Delegated, refuse, false), NotNeeded);
        assert_eq!(
            confirmation(&seen, ServiceAccount, refuse, false),
            NotNeeded
        );
    }
}
