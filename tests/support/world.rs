//! The delegation world: a fake Windmill (following the spec), a gateway
//! with Windmill delegation switched on, and in-process upstream MCP servers
//! that count what reaches them.

use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};

use super::fake_windmill::{FakeWindmill, RunningStep};
use super::recorder::Recorder;
use super::{SharedStore, TestGateway, call, rmcp_connect};

pub struct World {
    /// The gateway's config after `data_dir`: another replica starts from it.
    pub body: String,
    pub gw: TestGateway,
    pub wm: FakeWindmill,
    pub bigquery: Recorder,
    pub slack: Recorder,
    pub warehouse: Recorder,
    pub sa_token: String,
    pub admin_token: String,
}

/// A flow's job that took its grant and called through it.
pub struct FlowRun {
    pub step: RunningStep,
    pub token: String,
    pub grant_id: String,
    pub client: RunningService<RoleClient, ()>,
}

pub const DECLARATION: &str = r#"[{"bigquery": ["read"]}, {"slack": ["write"]}]"#;

pub async fn world() -> World {
    let store = super::default_store().await;
    world_on(store.as_ref()).await
}

/// The same world with its gateway on a shared store (see [`SharedStore`]).
pub async fn world_on(store: Option<&SharedStore>) -> World {
    let wm = FakeWindmill::start("finance").await;
    wm.add_user("alice", "alice@example.com");
    wm.add_user("bob", "bob@example.com");
    let bigquery = Recorder::start().await;
    let slack = Recorder::start().await;
    let warehouse = Recorder::start().await;
    let body = format!(
        r#"services:
  bigquery: {{ kind: mcp, url: "{}" }}
  slack: {{ kind: mcp, url: "{}" }}
  warehouse: {{ kind: mcp, url: "{}" }}
users:
  - email: alice@example.com
    access: {{ bigquery: read, slack: write, warehouse: high_risk }}
  - email: bob@example.com
    access: {{ bigquery: read, slack: read }}
  - email: windmill-sa@example.com
    service_account: true
    access: {{ bigquery: read }}
  - email: root@example.com
    admin: true
delegation:
  liveness_interval: 200ms
  revocation_poll: 100ms
"#,
        bigquery.url, slack.url, warehouse.url
    );
    let gw = TestGateway::start_on(&body, store).await;
    let sa_token = gw.token("windmill-sa@example.com").await;
    let admin_token = gw.token("root@example.com").await;
    let w = World {
        body,
        gw,
        wm,
        bigquery,
        slack,
        warehouse,
        sa_token,
        admin_token,
    };
    let (status, _) = w
        .admin("PUT", "/admin/api/delegation", json!({"enabled": true}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = w
        .admin(
            "POST",
            "/admin/api/windmill/instances",
            json!({"name": "prod", "base_url": w.wm.base_url, "workspace": "finance"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    w
}

impl World {
    /// Another gateway on the same shared store, with the same config.
    pub async fn replica(&self, store: &SharedStore) -> TestGateway {
        TestGateway::start_on(&self.body, Some(store)).await
    }

    /// A replica that polls the store only hourly: only PostgreSQL's
    /// notifications can reach it in time.
    pub async fn replica_that_never_polls(&self, store: &SharedStore) -> TestGateway {
        let body = self
            .body
            .replace("revocation_poll: 100ms", "revocation_poll: 1h");
        TestGateway::start_on(&body, Some(store)).await
    }

    /// `DELETE /admin/api/grants/{id}` on `gw`, as the admin.
    pub async fn revoke_at(&self, gw: &TestGateway, grant_id: &str) -> (u16, Value) {
        self.admin_at(
            gw,
            "DELETE",
            &format!("/admin/api/grants/{grant_id}"),
            Value::Null,
        )
        .await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.admin_at(&self.gw, method, path, body).await
    }

    /// An admin API call on one gateway (replica) of the world.
    pub async fn admin_at(
        &self,
        gw: &TestGateway,
        method: &str,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", gw.base);
        let request = match method {
            "GET" => client.get(&url),
            "PUT" => client.put(&url).json(&body),
            "POST" => client.post(&url).json(&body),
            "DELETE" => client.delete(&url),
            _ => unreachable!(),
        };
        let response = request.bearer_auth(&self.admin_token).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST /oauth/token with `fields`; returns (status, JSON body).
    pub async fn exchange_with(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let mut url = reqwest::Url::parse("http://form/").unwrap();
        url.query_pairs_mut().extend_pairs(fields);
        let body = url.query().unwrap_or("").to_owned();
        let response = reqwest::Client::new()
            .post(format!("{}/oauth/token", self.gw.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn exchange(&self, step: &RunningStep, declaration: &str) -> (u16, Value) {
        self.exchange_with(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &step.token),
            (
                "subject_token_type",
                "urn:mcpgate:params:oauth:token-type:windmill-job-token",
            ),
            ("actor_token", &self.sa_token),
            (
                "actor_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("workspace", "finance"),
            ("job_id", &step.job_id),
            ("flow_job_id", &step.flow_job_id),
            ("gateway_services", declaration),
        ])
        .await
    }

    pub async fn grant_token(&self, step: &RunningStep, declaration: &str) -> (String, String) {
        let (status, body) = self.exchange(step, declaration).await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["grant_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Alice's nightly P&L flow runs a job that makes one BigQuery read
    /// under its grant; the client stays connected.
    pub async fn a_flow_makes_one_read(&self) -> FlowRun {
        let step = self.wm.start_flow("alice", "f/finance/nightly_pnl");
        let (token, grant_id) = self.grant_token(&step, DECLARATION).await;
        let client = rmcp_connect(&self.gw.url, &token).await;
        call(
            &client,
            "bigquery_read_actions",
            json!({"action": "query", "sql": "select 1"}),
        )
        .await
        .unwrap();
        FlowRun {
            step,
            token,
            grant_id,
            client,
        }
    }

    /// A fresh `tools/list` on the gateway's `/mcp` with `token`, outside
    /// any session: how a client learns its token no longer works.
    pub async fn fresh_tools_list(&self, token: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(&self.gw.url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .unwrap()
    }

    pub async fn refusal_row(&self, code: &str) -> mcpgate::audit::AuditRow {
        self.gw
            .audit_rows()
            .await
            .into_iter()
            .rev()
            .find(|r| r.reason_code.as_deref() == Some(code))
            .unwrap_or_else(|| panic!("no audit row with reason {code}"))
    }
}
