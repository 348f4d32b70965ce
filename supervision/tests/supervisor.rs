use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use supervision::{
    ChildSpec, LifecycleEvent, LifecycleEvents, LifecycleKind, Registry, Restart, RestartPolicy,
    Supervisor, SupervisorArgs, SupervisorMsg, start_child,
};
use tokio::sync::broadcast::Receiver;

enum ProbeMsg {
    Panic,
    Ping(RpcReplyPort<u64>),
}

/// Answers pings with its generation; panics on demand; records its stop.
struct Probe {
    generation: u64,
    stops: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ProbeMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Panic => panic!("injected panic"),
            ProbeMsg::Ping(reply) => {
                let _ = reply.send(self.generation);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<ProbeMsg>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        self.stops.lock().unwrap().push(self.name.clone());
        Ok(())
    }
}

fn probe_spec(key: &str, stops: Arc<Mutex<Vec<String>>>) -> ChildSpec {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let name = key.to_owned();
    ChildSpec::new(key, Restart::Permanent, move || {
        let generation = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (
            Probe {
                generation,
                stops: stops.clone(),
                name: name.clone(),
            },
            (),
        )
    })
}

async fn supervisor(policy: RestartPolicy) -> (ActorRef<SupervisorMsg>, Registry, LifecycleEvents) {
    let registry = Registry::new();
    let events = LifecycleEvents::default();
    let (sup, _) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            name: "test".into(),
            policy,
            events: events.clone(),
            registry: registry.clone(),
            stop_timeout: Duration::from_secs(5),
            children: Vec::new(),
        },
    )
    .await
    .unwrap();
    (sup, registry, events)
}

async fn next_matching(
    rx: &mut Receiver<LifecycleEvent>,
    pred: impl Fn(&LifecycleKind) -> bool,
) -> LifecycleEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = rx.recv().await.unwrap();
            if pred(&ev.kind) {
                return ev;
            }
        }
    })
    .await
    .expect("lifecycle event within 5s")
}

fn fast_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_restarts,
        window: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn panicking_child_is_restarted_and_registry_follows() {
    let (sup, registry, events) = supervisor(fast_policy(5)).await;
    let mut rx = events.subscribe();
    start_child(&sup, probe_spec("probe", Default::default()))
        .await
        .unwrap();
    let first: ActorRef<ProbeMsg> = registry.get("probe").unwrap();
    assert_eq!(ractor::call!(first, ProbeMsg::Ping).unwrap(), 0);

    first.cast(ProbeMsg::Panic).unwrap();
    let failed = next_matching(&mut rx, |k| matches!(k, LifecycleKind::Failed { .. })).await;
    assert!(
        matches!(failed.kind, LifecycleKind::Failed { ref error } if error.contains("injected panic"))
    );
    let restarted = next_matching(&mut rx, |k| matches!(k, LifecycleKind::Restarted { .. })).await;
    assert_eq!(restarted.child, "probe");

    let second: ActorRef<ProbeMsg> = registry.get("probe").unwrap();
    assert_eq!(ractor::call!(second, ProbeMsg::Ping).unwrap(), 1);
}

#[tokio::test]
async fn exceeding_restart_intensity_escalates() {
    let (sup, registry, events) = supervisor(fast_policy(2)).await;
    let mut rx = events.subscribe();
    start_child(&sup, probe_spec("probe", Default::default()))
        .await
        .unwrap();
    for _ in 0..3 {
        let probe: ActorRef<ProbeMsg> = loop {
            if let Some(p) = registry.get("probe") {
                break p;
            }
            next_matching(&mut rx, |k| matches!(k, LifecycleKind::Restarted { .. })).await;
        };
        probe.cast(ProbeMsg::Panic).unwrap();
        next_matching(&mut rx, |k| matches!(k, LifecycleKind::Failed { .. })).await;
    }
    next_matching(&mut rx, |k| matches!(k, LifecycleKind::Escalated { .. })).await;
    tokio::time::timeout(Duration::from_secs(5), sup.get_cell().wait(None))
        .await
        .unwrap()
        .ok();
    assert_eq!(sup.get_status(), ractor::ActorStatus::Stopped);
}

#[tokio::test]
async fn shutdown_stops_children_in_reverse_start_order() {
    let (sup, _registry, _events) = supervisor(fast_policy(5)).await;
    let stops: Arc<Mutex<Vec<String>>> = Default::default();
    for key in ["first", "second", "third"] {
        start_child(&sup, probe_spec(key, stops.clone()))
            .await
            .unwrap();
    }
    ractor::call!(sup, SupervisorMsg::Shutdown).unwrap();
    assert_eq!(*stops.lock().unwrap(), vec!["third", "second", "first"]);
}
