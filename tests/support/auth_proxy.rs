//! A loopback reverse proxy that adds `Authorization: Bearer <token>` to
//! every request and passes everything else through unchanged, both ways
//! (method, path, headers including `Host` and `Origin`, bodies, streamed SSE
//! answers). Tools that cannot send a header — the conformance suite — reach
//! the gateway through it; the gateway itself keeps requiring a token.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::stream;

pub struct AuthProxy {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Target {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl AuthProxy {
    /// Proxy to `base` (scheme://host:port), adding `token`.
    pub async fn start(base: &str, token: &str) -> AuthProxy {
        let target = Target {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        let app = axum::Router::new().fallback(forward).with_state(target);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AuthProxy {
            url: format!("http://{addr}"),
            task,
        }
    }
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(target): State<Target>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let body = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(body) => body,
        Err(_) => return status(400),
    };
    let mut headers = parts.headers.clone();
    headers.remove(http::header::AUTHORIZATION);
    headers.remove(http::header::CONTENT_LENGTH);
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", target.token).parse().unwrap(),
    );
    let sent = target
        .client
        .request(parts.method, format!("{}{path}", target.base))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let Ok(answer) = sent else {
        return status(502);
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    // Streamed chunk by chunk: an SSE answer reaches the client as it comes.
    let chunks = stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        match answer.chunk().await {
            Ok(Some(bytes)) => Some((Ok::<_, reqwest::Error>(bytes), Some(answer))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    response
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| status(502))
}

fn status(code: u16) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}
