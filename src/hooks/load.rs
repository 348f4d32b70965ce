//! Loading hook files: `hooks/company/*.yaml` and `hooks/users/<email>/*.yaml`.
//! Any bad file rejects the whole set with `file:line:column`, so the caller
//! keeps the previous set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::spec::{HookFile, KindSpec, Phase};
use super::{CompiledHook, HookSet, Layer};
use crate::config::locate;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct HookError {
    pub location: String,
    pub message: String,
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, HookError> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => {
            return Err(HookError {
                location: dir.display().to_string(),
                message: format!("cannot read hook directory: {e}"),
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Load every hook under `root` (missing directories mean no hooks).
pub fn load_dir(root: &Path) -> Result<HookSet, HookError> {
    let mut hooks = Vec::new();
    for file in yaml_files(&root.join("company"))? {
        hooks.extend(load_file(&file, Layer::Company)?);
    }
    let users = root.join("users");
    if let Ok(entries) = std::fs::read_dir(&users) {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let email = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !email.contains('@') {
                return Err(HookError {
                    location: dir.display().to_string(),
                    message: "a user hook directory is named after the user's email".into(),
                });
            }
            for file in yaml_files(&dir)? {
                hooks.extend(load_file(&file, Layer::User(email.clone()))?);
            }
        }
    }
    Ok(HookSet::new(hooks))
}

pub fn load_file(path: &Path, layer: Layer) -> Result<Vec<CompiledHook>, HookError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| HookError {
        location: file.clone(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file, layer)
}

/// Parse and compile one file's hooks.
pub fn parse(text: &str, file: &str, layer: Layer) -> Result<Vec<CompiledHook>, HookError> {
    let parsed: HookFile = serde_yaml::from_str(text).map_err(|e| HookError {
        location: match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.to_owned(),
        },
        message: e.to_string(),
    })?;
    let at = |needle: &str, message: String| HookError {
        location: locate(text, file, needle),
        message,
    };
    let mut out = Vec::new();
    for spec in parsed.hooks {
        let name = spec.name.clone();
        if let Layer::User(_) = layer
            && !spec.kind.allowed_for_users()
        {
            return Err(at(
                &name,
                format!(
                    "hook '{name}': a user hook may only narrow (deny, require_confirmation, endpoint_allowlist, validate, set_default, cap_response, warn), not '{}'",
                    spec.kind.name()
                ),
            ));
        }
        let natural = spec.kind.phase();
        let phase_ok = spec.phase == natural
            || (spec.phase == Phase::Post
                && matches!(spec.kind, KindSpec::Deny { .. } | KindSpec::Warn { .. }));
        if !phase_ok {
            return Err(at(
                &name,
                format!(
                    "hook '{name}': kind '{}' does not run in the {:?} phase",
                    spec.kind.name(),
                    spec.phase
                ),
            ));
        }
        for risk in &spec.matches.risk {
            if actors::grant::Risk::parse(risk).is_none() {
                return Err(at(
                    risk,
                    format!("hook '{name}': unknown risk class '{risk}'"),
                ));
            }
        }
        let when = match &spec.when {
            Some(source) => Some(cel::Program::compile(source).map_err(|e| {
                at(
                    source,
                    format!("hook '{name}': `when` is not a valid CEL expression: {e}"),
                )
            })?),
            None => None,
        };
        let patterns = match &spec.kind {
            KindSpec::Validate { patterns, .. } => patterns
                .iter()
                .map(|(field, pattern)| {
                    regex::Regex::new(pattern)
                        .map(|re| (field.clone(), re))
                        .map_err(|e| {
                            at(
                                pattern,
                                format!("hook '{name}': pattern for '{field}': {e}"),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        out.push(CompiledHook {
            layer: layer.clone(),
            source: Arc::from(file),
            spec,
            when,
            patterns,
        });
    }
    Ok(out)
}
