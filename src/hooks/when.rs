//! What a `when:` condition reads: `subject`, `actor`, `service`, `action`,
//! `risk`, `tool`, `args` and (post hooks) `result`.
//!
//! The scope is converted to CEL values once per call and lent to each
//! evaluation through a variable resolver. A hook that rewrites arguments
//! has only the top-level fields it touched converted again: re-binding the
//! whole `args` after each rewrite was a tenth of the hooks' cost.

use std::sync::Arc;

use cel::common::types::{CelMap, CelMapKey, CelNull, CelString};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use rmcp::model::JsonObject;
use serde_json::Value;

use super::CallFacts;

pub struct WhenScope<'a> {
    facts: [(&'static str, CelString<'a>); 6],
    args: CelMap<'static>,
    result: Box<dyn Val>,
}

impl<'a> WhenScope<'a> {
    pub fn new(
        facts: &CallFacts<'a>,
        args: &JsonObject,
        result: Option<&Value>,
    ) -> Result<Self, String> {
        let mut entries = std::collections::HashMap::with_capacity(args.len());
        for (name, value) in args {
            entries.insert(key(name), convert(value).map_err(bind_error("args"))?);
        }
        let result = match result {
            Some(value) => convert(value).map_err(bind_error("result"))?,
            None => Box::new(CelNull),
        };
        Ok(Self {
            facts: [
                ("subject", facts.subject.into()),
                ("actor", facts.actor.into()),
                ("service", facts.service.into()),
                ("action", facts.action.into()),
                ("risk", facts.risk.into()),
                ("tool", facts.tool.into()),
            ],
            args: CelMap::from(entries),
            result,
        })
    }

    /// Bring `args` up to date after a rewrite of these top-level fields.
    pub fn refresh_args(&mut self, args: &JsonObject, fields: &[&str]) -> Result<(), String> {
        let mut entries = std::mem::take(&mut self.args).into_inner();
        for field in fields {
            match args.get(*field) {
                Some(value) => {
                    let value = convert(value).map_err(bind_error("args"))?;
                    entries.insert(key(field), value);
                }
                None => {
                    entries.remove(&key(field));
                }
            }
        }
        self.args = CelMap::from(entries);
        Ok(())
    }

    /// Evaluate a compiled condition in this scope.
    pub fn evaluate(&self, program: &cel::Program) -> cel::ResolveResult {
        let mut context = cel::Context::with_env(env());
        context.set_variable_resolver(self);
        program.execute(&context)
    }
}

impl VariableResolver for WhenScope<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "args" => Some(CowVal::Borrowed(&self.args)),
            "result" => Some(CowVal::Borrowed(self.result.as_ref())),
            _ => self
                .facts
                .iter()
                .find(|(name, _)| *name == variable)
                .map(|(_, value)| CowVal::Borrowed(value as &dyn Val)),
        }
    }
}

/// The standard CEL environment, built once (building it is the costly part).
pub fn env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

fn key(name: &str) -> CelMapKey<'static> {
    CelMapKey::String(CelString::from(name.to_owned()))
}

/// JSON to CEL as `Context::add_variable` converts it (serde), so a
/// condition sees the same types: a positive integer is a `uint`.
fn convert(value: &Value) -> Result<Box<dyn Val>, String> {
    let value = cel::to_value(value).map_err(|e| e.to_string())?;
    Box::<dyn Val>::try_from(value).map_err(|e| e.to_string())
}

fn bind_error(name: &'static str) -> impl Fn(String) -> String {
    move |e| format!("cannot bind `{name}`: {e}")
}

#[cfg(test)]
mod tests {
    use super::super::test_facts as facts;
    use super::*;

    fn holds(scope: &WhenScope<'_>, condition: &str) -> bool {
        let program = env().compile(condition).expect("compiles");
        match scope.evaluate(&program) {
            Ok(cel::Value::Bool(b)) => b,
            other => panic!("{condition}: {other:?}"),
        }
    }

    #[test]
    fn conditions_read_the_facts_the_arguments_and_the_result() {
        let args = serde_json::json!({
            "channel": "#ops", "count": 3, "delta": -2, "ratio": 0.5,
            "fields": {"priority": "urgent"}, "tags": ["a", "b"], "none": null
        });
        let result = serde_json::json!({"content": [{"type": "text", "text": "ok"}]});
        let scope = WhenScope::new(&facts(), args.as_object().unwrap(), Some(&result)).unwrap();
        for condition in [
            r##"subject.endsWith("@example.com") && actor.startsWith("windmill:")"##,
            r##"service == "slack" && action == "post_message" && risk == "write" && tool == "slack_write_actions""##,
            r##"args.channel in ["#ops", "#finance"] && args.count == 3 && args.count == 3u"##,
            r##"args.delta < 0 && args.ratio == 0.5 && args.fields.priority == "urgent""##,
            r##"has(args.channel) && !has(args.thread) && "tags" in args && size(args.tags) == 2"##,
            r##"args.none == null && size(args) == 7 && args.exists(k, k == "ratio")"##,
            r##"args == {"channel": "#ops", "count": 3u, "delta": -2, "ratio": 0.5, "fields": {"priority": "urgent"}, "tags": ["a", "b"], "none": null}"##,
            r##"result.content[0].text == "ok""##,
        ] {
            assert!(holds(&scope, condition), "{condition}");
        }
        assert!(!holds(&scope, r##"args.channel == "#finance""##));
        let pre = WhenScope::new(&facts(), args.as_object().unwrap(), None).unwrap();
        assert!(holds(&pre, "result == null"));
    }

    #[test]
    fn a_refresh_sees_fields_set_changed_and_removed_and_keeps_the_rest() {
        let mut args = serde_json::json!({"channel": "#ops", "text": "hi", "gone": 1})
            .as_object()
            .unwrap()
            .clone();
        let mut scope = WhenScope::new(&facts(), &args, None).unwrap();
        args.insert("thread".into(), serde_json::json!({"ts": "1.2"}));
        args.insert("text".into(), "bye".into());
        args.remove("gone");
        // Not named: left as it was converted, as the caller promises it is.
        scope
            .refresh_args(&args, &["thread", "text", "gone"])
            .unwrap();
        assert!(holds(
            &scope,
            r##"args.thread.ts == "1.2" && args.text == "bye" && !has(args.gone) && args.channel == "#ops""##
        ));
        assert!(holds(&scope, "size(args) == 3"));
    }
}
