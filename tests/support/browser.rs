//! A person's browser for the sign-in tests: an HTTP client that keeps
//! cookies (by name, for every loopback port, as browsers do per host) and
//! shows redirects instead of following them.
#![allow(dead_code)]

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

/// A person's browser: cookies kept, redirects shown, not followed.
pub struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn absorb(&mut self, response: reqwest::Response) -> Page {
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let lower = attributes.to_ascii_lowercase();
            if lower.contains("max-age=0") || lower.contains("expires=thu, 01 jan 1970") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: response.status(),
            location: response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let response = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(response).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap();
        self.absorb(response).await
    }

    /// Open a one-time sign-in link as a person does: its page, then its button.
    pub async fn sign_in(&mut self, base: &str, link: &str) -> Page {
        let shown = self.get(&format!("{base}/oauth/signin?link={link}")).await;
        assert_eq!(shown.status, 200, "{}", shown.body);
        self.post(&format!("{base}/oauth/signin"), &[("link", link)])
            .await
    }

    /// Approve the consent page `consent` as a person does; the answer
    /// sends the browser back to the client.
    pub async fn approve(&mut self, base: &str, consent: &Page) -> Page {
        self.post(
            &format!("{base}/oauth/consent"),
            &[("ticket", &ticket_of(consent)), ("decision", "approve")],
        )
        .await
    }
}

/// An `application/x-www-form-urlencoded` body.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

pub fn ticket_of(page: &Page) -> String {
    let start = page
        .body
        .find("name=ticket value=\"")
        .unwrap_or_else(|| panic!("no consent ticket in: {}", page.body))
        + "name=ticket value=\"".len();
    let end = start + page.body[start..].find('"').unwrap();
    page.body[start..end].to_owned()
}

pub fn query_of(location: &str) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}
