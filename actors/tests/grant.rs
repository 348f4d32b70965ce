use std::collections::BTreeMap;
use std::time::Duration;

use actors::grant::{GrantActor, GrantArgs, GrantMsg, GrantRefusal, GrantScope, Risk};
use ractor::Actor;

fn scope() -> GrantScope {
    GrantScope {
        grant_id: "g1".into(),
        subject: "owner@example.com".into(),
        actor: "windmill:prod/finance/f/pnl".into(),
        services: BTreeMap::from([
            ("bigquery".into(), Risk::Read),
            ("slack".into(), Risk::Write),
        ]),
    }
}

#[tokio::test]
async fn a_grant_authorizes_only_its_scope_and_ends_with_its_actor() {
    let (grant, handle) = Actor::spawn(
        None,
        GrantActor,
        GrantArgs {
            scope: scope(),
            ttl: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let ask = |service: &str, risk| {
        let service = service.to_owned();
        let grant = grant.clone();
        async move {
            ractor::call!(grant, |reply| GrantMsg::Authorize {
                service,
                risk,
                reply
            })
        }
    };
    assert_eq!(
        ask("bigquery", Risk::Read).await.unwrap().unwrap().subject,
        "owner@example.com"
    );
    assert_eq!(
        ask("bigquery", Risk::Write).await.unwrap().unwrap_err(),
        GrantRefusal::RiskNotGranted {
            service: "bigquery".into(),
            asked: Risk::Write,
            granted: Risk::Read
        }
    );
    assert_eq!(
        ask("jira", Risk::Read).await.unwrap().unwrap_err(),
        GrantRefusal::ServiceNotGranted("jira".into())
    );

    // Revocation is stopping the actor: nothing can be authorized afterwards.
    grant.stop(Some("revoked".into()));
    handle.await.unwrap();
    assert!(ask("slack", Risk::Write).await.is_err());
}

#[tokio::test]
async fn a_grant_stops_itself_when_its_ttl_passes() {
    let (grant, handle) = Actor::spawn(
        None,
        GrantActor,
        GrantArgs {
            scope: scope(),
            ttl: Duration::from_millis(50),
        },
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.get_status(), ractor::ActorStatus::Stopped);
}
