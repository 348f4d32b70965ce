use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actors::grant::{
    EndReason, GrantActor, GrantArgs, GrantGate, GrantMsg, GrantRefusal, GrantScope, Liveness, Risk,
};
use ractor::{Actor, ActorRef};

fn scope() -> GrantScope {
    GrantScope {
        grant_id: "g1".into(),
        subject: "owner@example.com".into(),
        actor: "windmill:prod/finance/f/pnl".into(),
        job_id: Some("job-1".into()),
        declared: BTreeMap::from([
            ("bigquery".into(), Risk::Read),
            ("slack".into(), Risk::Write),
            ("jira".into(), Risk::Write),
        ]),
        // The owner may only read Jira.
        services: BTreeMap::from([
            ("bigquery".into(), Risk::Read),
            ("slack".into(), Risk::Write),
            ("jira".into(), Risk::Read),
        ]),
    }
}

fn args(ttl: Duration, gate: GrantGate) -> GrantArgs {
    GrantArgs {
        scope: scope(),
        ttl,
        gate,
        probe: None,
        on_end: None,
    }
}

async fn ask(
    grant: &ActorRef<GrantMsg>,
    service: &str,
    risk: Risk,
) -> Result<Result<GrantScope, GrantRefusal>, ractor::RactorErr<GrantMsg>> {
    let service = service.to_owned();
    ractor::call!(grant, |reply| GrantMsg::Authorize {
        service,
        risk,
        reply
    })
}

#[tokio::test]
async fn a_grant_authorizes_only_its_scope_and_ends_with_its_actor() {
    let gate = GrantGate::default();
    let (grant, handle) = Actor::spawn(
        None,
        GrantActor,
        args(Duration::from_secs(60), gate.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        ask(&grant, "bigquery", Risk::Read)
            .await
            .unwrap()
            .unwrap()
            .subject,
        "owner@example.com"
    );
    let refusal = ask(&grant, "bigquery", Risk::Write)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refusal.code(), "risk_not_granted");
    let refusal = ask(&grant, "metabase", Risk::Read)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refusal, GrantRefusal::ServiceNotDeclared("metabase".into()));
    let refusal = ask(&grant, "jira", Risk::Write).await.unwrap().unwrap_err();
    assert_eq!(refusal.code(), "outside_owner_scope");
    assert!(gate.admit().await.is_ok());

    // Revocation closes the gate before it is acknowledged, then stops the actor.
    ractor::call!(grant, |reply| GrantMsg::Revoke {
        reason: EndReason::revoked_by("admin@example.com"),
        reply
    })
    .unwrap();
    assert_eq!(
        gate.admit().await.unwrap_err(),
        EndReason::Revoked("revoked by admin@example.com".into())
    );
    handle.await.unwrap();
    assert!(ask(&grant, "slack", Risk::Write).await.is_err());
}

#[tokio::test]
async fn a_revocation_waits_for_calls_that_are_handing_off_and_refuses_the_rest() {
    let gate = GrantGate::default();
    let (grant, _handle) = Actor::spawn(
        None,
        GrantActor,
        args(Duration::from_secs(60), gate.clone()),
    )
    .await
    .unwrap();
    let admitted = gate.admit().await.unwrap();
    let revoker = {
        let grant = grant.clone();
        tokio::spawn(async move {
            ractor::call!(grant, |reply| GrantMsg::Revoke {
                reason: EndReason::Revoked("revoked".into()),
                reply
            })
        })
    };
    // The revocation cannot be acknowledged while a call is mid-handoff.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!revoker.is_finished());
    drop(admitted);
    revoker.await.unwrap().unwrap();
    assert!(gate.admit().await.is_err());
}

#[tokio::test]
async fn a_call_refused_while_the_gate_closes_learns_why_the_grant_ended() {
    let gate = GrantGate::default();
    let admitted = gate.admit().await.unwrap();
    let revoked = EndReason::Revoked("revoked by root".into());
    let closing = {
        let (gate, revoked) = (gate.clone(), revoked.clone());
        tokio::spawn(async move { gate.close(&revoked).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Still closing (a call is mid-handoff): nothing to report yet without
    // waiting, and a refused call that waits is told the revocation.
    assert_eq!(gate.closed_reason(), None);
    let asking = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.settled_reason().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!asking.is_finished());
    drop(admitted);
    closing.await.unwrap();
    assert_eq!(asking.await.unwrap(), Some(revoked.clone()));
    // A second close (the actor's post_stop) neither waits nor changes it,
    // and the reason stays readable at every moment.
    gate.close(&EndReason::Other("stopped".into())).await;
    assert_eq!(gate.closed_reason(), Some(revoked.clone()));
    assert_eq!(gate.admit().await.unwrap_err(), revoked);
}

#[tokio::test]
async fn a_grant_stops_itself_when_its_ttl_passes() {
    let gate = GrantGate::default();
    let (grant, handle) = Actor::spawn(
        None,
        GrantActor,
        args(Duration::from_millis(50), gate.clone()),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.get_status(), ractor::ActorStatus::Stopped);
    assert_eq!(gate.admit().await.unwrap_err(), EndReason::Expired);
}

#[tokio::test]
async fn a_grant_ends_when_its_probe_reports_the_job_over_and_says_why() {
    let probes = Arc::new(AtomicU32::new(0));
    let counted = probes.clone();
    let gate = GrantGate::default();
    let ended = Arc::new(std::sync::Mutex::new(None));
    let seen = ended.clone();
    let (_grant, handle) = Actor::spawn(
        None,
        GrantActor,
        GrantArgs {
            probe: Some((
                Arc::new(move || {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    Box::pin(async move {
                        if n < 2 {
                            Liveness::Alive
                        } else {
                            Liveness::Ended("job finished".into())
                        }
                    })
                }),
                Duration::from_millis(20),
            )),
            on_end: Some(Arc::new(move |scope: &GrantScope, reason: &EndReason| {
                *seen.lock().unwrap() = Some((scope.grant_id.clone(), reason.to_string()));
            })),
            ..args(Duration::from_secs(60), gate.clone())
        },
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(probes.load(Ordering::SeqCst), 3);
    assert_eq!(
        gate.admit().await.unwrap_err(),
        EndReason::JobEnded("job finished".into())
    );
    assert_eq!(
        ended.lock().unwrap().clone(),
        Some(("g1".to_owned(), "job finished".to_owned()))
    );
}

#[tokio::test]
async fn an_unreachable_job_host_ends_the_grant_after_repeated_failures() {
    let gate = GrantGate::default();
    let (_grant, handle) = Actor::spawn(
        None,
        GrantActor,
        GrantArgs {
            probe: Some((
                Arc::new(|| Box::pin(async { Liveness::Unknown("connection refused".into()) })),
                Duration::from_millis(10),
            )),
            ..args(Duration::from_secs(60), gate.clone())
        },
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(gate.admit().await.unwrap_err(), EndReason::JobEnded(why) if why.contains("connection refused"))
    );
}
