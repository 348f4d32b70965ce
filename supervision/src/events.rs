use std::time::Duration;

use tokio::sync::broadcast;

/// What happened to a supervised child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleKind {
    Started,
    Stopped {
        reason: Option<String>,
    },
    Failed {
        error: String,
    },
    Restarted {
        attempt: u32,
        after: Duration,
    },
    /// The supervisor exceeded its restart intensity and failed itself.
    Escalated {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub supervisor: String,
    pub child: String,
    pub kind: LifecycleKind,
}

/// A broadcast bus of lifecycle events. Lagging subscribers lose old events;
/// supervision never blocks on an observer.
#[derive(Debug, Clone)]
pub struct LifecycleEvents {
    sender: broadcast::Sender<LifecycleEvent>,
}

impl Default for LifecycleEvents {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl LifecycleEvents {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.sender.subscribe()
    }

    pub(crate) fn emit(&self, supervisor: &str, child: &str, kind: LifecycleKind) {
        // No subscriber is not an error.
        let _ = self.sender.send(LifecycleEvent {
            supervisor: supervisor.to_owned(),
            child: child.to_owned(),
            kind,
        });
    }
}
