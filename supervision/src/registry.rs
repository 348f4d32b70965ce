use std::sync::Arc;

use dashmap::DashMap;
use ractor::{ActorCell, ActorRef, ActorStatus};

/// Running actors by key. Lookups are lock-striped reads, never a mailbox hop,
/// so the hot path can find its actor without a central bottleneck.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    actors: Arc<DashMap<String, ActorCell>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn insert(&self, key: &str, cell: ActorCell) {
        self.actors.insert(key.to_owned(), cell);
    }

    /// Removes `key` only if it still points at `cell` (a restart may have replaced it).
    pub(crate) fn remove_if(&self, key: &str, cell: &ActorCell) {
        self.actors
            .remove_if(key, |_, current| current.get_id() == cell.get_id());
    }

    /// The actor registered under `key`, typed by its message; `None` if it
    /// takes another message type (a caller that names the wrong one gets
    /// nothing, rather than a reference whose sends fail).
    pub fn get<M: ractor::Message>(&self, key: &str) -> Option<ActorRef<M>> {
        let cell = self.actors.get(key)?.value().clone();
        if cell.is_message_type_of::<M>() == Some(false) {
            return None;
        }
        match cell.get_status() {
            ActorStatus::Stopping | ActorStatus::Stopped => None,
            _ => Some(ActorRef::from(cell)),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.actors.contains_key(key)
    }

    /// Keys starting with `prefix`, e.g. every `session/` actor.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.actors
            .iter()
            .filter(|entry| entry.key().starts_with(prefix))
            .map(|entry| entry.key().clone())
            .collect()
    }

    pub fn count_with_prefix(&self, prefix: &str) -> usize {
        self.actors
            .iter()
            .filter(|entry| entry.key().starts_with(prefix))
            .count()
    }
}
