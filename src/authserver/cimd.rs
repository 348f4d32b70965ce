//! Client ID Metadata Documents (the MCP spec's preferred registration): a
//! `client_id` that is an HTTPS URL names a JSON document the client hosts.
//! The gateway fetches it — an attacker chooses that URL, so the fetch is
//! guarded: only public addresses (checked after resolution, and the
//! connection pinned to the checked address so DNS cannot rebind it), no
//! redirects, a time limit, a size limit; the document's `client_id` must be
//! its own URL. Documents are cached, with bounds.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use dashmap::DashMap;
use futures::StreamExt;
use reqwest::Url;
use serde::Deserialize;

use super::redirect;
use crate::config::oauth::CimdConfig;
use crate::domain::{Reason, Refusal};

/// A client as its metadata document describes it.
#[derive(Debug, Clone)]
pub struct Document {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    client_id: Option<String>,
    client_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
}

pub struct CimdCache {
    config: CimdConfig,
    /// `extra_ca_file`, read once at start.
    extra_ca: Option<reqwest::Certificate>,
    entries: DashMap<String, (Instant, Document)>,
}

/// Whether `url` is a client id this server would fetch as a document
/// (rather than look up as a registered id).
pub fn is_document_id(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

impl CimdCache {
    pub fn new(config: CimdConfig) -> Result<Self, String> {
        let extra_ca = match &config.extra_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!(
                        "oauth.client_metadata_documents.extra_ca_file {}: {e}",
                        path.display()
                    )
                })?;
                Some(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    format!(
                        "oauth.client_metadata_documents.extra_ca_file {}: {e}",
                        path.display()
                    )
                })?)
            }
            None => None,
        };
        Ok(Self {
            config,
            extra_ca,
            entries: DashMap::new(),
        })
    }

    /// The document at `client_id`, from the cache or fetched now.
    pub async fn get(&self, client_id: &str) -> Result<Document, Refusal> {
        if !self.config.enabled {
            return Err(Refusal::new(
                Reason::InvalidClient,
                "client metadata documents are not accepted here",
            ));
        }
        if let Some(entry) = self.entries.get(client_id)
            && entry.0.elapsed() < self.config.cache_ttl
        {
            return Ok(entry.1.clone());
        }
        let document = fetch(&self.config, self.extra_ca.as_ref(), client_id).await?;
        self.remember(client_id, document.clone());
        Ok(document)
    }

    fn remember(&self, client_id: &str, document: Document) {
        if self.entries.len() >= self.config.cache_entries {
            let ttl = self.config.cache_ttl;
            self.entries.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if self.entries.len() >= self.config.cache_entries
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|e| e.value().0)
                .map(|e| e.key().clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries
            .insert(client_id.to_owned(), (Instant::now(), document));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn refused(reason: Reason, message: impl Into<String>) -> Refusal {
    Refusal::new(reason, message)
}

/// Addresses a fetch may reach without `allow_private_addresses`: globally
/// routable unicast only.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 reaches IPv4 inside
        }
    }
}

/// Fetch and check the document at `client_id`.
pub async fn fetch(
    config: &CimdConfig,
    extra_ca: Option<&reqwest::Certificate>,
    client_id: &str,
) -> Result<Document, Refusal> {
    let invalid = |m: String| refused(Reason::ClientMetadataInvalid, m);
    let url = Url::parse(client_id).map_err(|e| invalid(format!("client_id is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if config.allow_http => {}
        _ => {
            return Err(invalid(
                "a client_id URL must be https (client ID metadata documents)".into(),
            ));
        }
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "a client_id URL must not carry a fragment or credentials".into(),
        ));
    }
    if url.path() == "/" {
        return Err(invalid("a client_id URL must have a path".into()));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("a client_id URL needs a host".into()))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    // Resolve once, check every address, and connect only to a checked one.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(config.timeout, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| {
                refused(
                    Reason::ClientMetadataUnavailable,
                    format!("resolving {host} timed out"),
                )
            })?
            .map_err(|e| {
                refused(
                    Reason::ClientMetadataUnavailable,
                    format!("cannot resolve {host}: {e}"),
                )
            })?
            .collect(),
    };
    let Some(first) = addresses.first().copied() else {
        return Err(refused(
            Reason::ClientMetadataUnavailable,
            format!("{host} has no address"),
        ));
    };
    if !config.allow_private_addresses
        && let Some(bad) = addresses.iter().find(|a| !is_public(a.ip()))
    {
        return Err(refused(
            Reason::ClientMetadataForbiddenAddress,
            format!(
                "{host} resolves to {}, a private, loopback or link-local address",
                bad.ip()
            ),
        ));
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .resolve(bare, first);
    if let Some(ca) = extra_ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    let client = builder.build().map_err(|e| {
        refused(
            Reason::ClientMetadataUnavailable,
            format!("http client: {e}"),
        )
    })?;
    let started = Instant::now();
    let response = client
        .get(url.clone())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            refused(
                Reason::ClientMetadataUnavailable,
                format!("fetching {client_id}: {}", without_url(&e)),
            )
        })?;
    if !response.status().is_success() {
        return Err(refused(
            Reason::ClientMetadataUnavailable,
            format!("{client_id} answered {}", response.status()),
        ));
    }
    let limit = config.max_bytes;
    if response
        .content_length()
        .is_some_and(|n| n as usize > limit)
    {
        return Err(too_large(limit));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let remaining = |started: Instant| config.timeout.saturating_sub(started.elapsed());
    loop {
        let next = tokio::time::timeout(remaining(started), stream.next())
            .await
            .map_err(|_| {
                refused(
                    Reason::ClientMetadataUnavailable,
                    format!(
                        "{client_id} did not send its document within {}",
                        humantime::format_duration(config.timeout)
                    ),
                )
            })?;
        match next {
            None => break,
            Some(Ok(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Some(Err(e)) => {
                return Err(refused(
                    Reason::ClientMetadataUnavailable,
                    format!("reading {client_id}: {}", without_url(&e)),
                ));
            }
        }
    }
    parse(client_id, &url, &body)
}

fn too_large(limit: usize) -> Refusal {
    refused(
        Reason::ClientMetadataTooLarge,
        format!("the client metadata document is larger than {limit} bytes"),
    )
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        text = format!("{text}: {source}");
    }
    text
}

/// Check a fetched document against the URL it came from.
fn parse(client_id: &str, url: &Url, body: &[u8]) -> Result<Document, Refusal> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        refused(
            Reason::ClientMetadataInvalid,
            format!("the client metadata document is not valid JSON: {e}"),
        )
    })?;
    match raw.client_id.as_deref() {
        Some(id) if id == client_id => {}
        Some(other) => {
            return Err(refused(
                Reason::ClientMetadataMismatch,
                format!("the document at {client_id} names another client_id ({other})"),
            ));
        }
        None => {
            return Err(refused(
                Reason::ClientMetadataMismatch,
                format!("the document at {client_id} names no client_id"),
            ));
        }
    }
    if let Some(method) = raw.token_endpoint_auth_method.as_deref()
        && method != "none"
    {
        return Err(refused(
            Reason::ClientMetadataInvalid,
            format!("token_endpoint_auth_method '{method}' is not supported (only 'none')"),
        ));
    }
    let redirect_uris = raw.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(refused(
            Reason::ClientMetadataInvalid,
            "the client metadata document lists no redirect_uris",
        ));
    }
    for uri in &redirect_uris {
        redirect::acceptable(uri).map_err(|e| refused(Reason::ClientMetadataInvalid, e))?;
    }
    let client_name = raw
        .client_name
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.chars().take(100).collect())
        .unwrap_or_else(|| url.host_str().unwrap_or(client_id).to_owned());
    Ok(Document {
        client_id: client_id.to_owned(),
        client_name,
        redirect_uris,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_unicast_is_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_document_must_name_its_own_url() {
        let id = "https://app.example/client.json";
        let url = Url::parse(id).unwrap();
        let good = format!(
            r#"{{"client_id":"{id}","client_name":"App","redirect_uris":["https://app.example/cb"]}}"#
        );
        assert_eq!(parse(id, &url, good.as_bytes()).unwrap().client_name, "App");
        let other = r#"{"client_id":"https://evil.example/c.json","redirect_uris":["https://app.example/cb"]}"#;
        assert_eq!(
            parse(id, &url, other.as_bytes()).unwrap_err().reason,
            Reason::ClientMetadataMismatch
        );
        let no_uris = format!(r#"{{"client_id":"{id}"}}"#);
        assert_eq!(
            parse(id, &url, no_uris.as_bytes()).unwrap_err().reason,
            Reason::ClientMetadataInvalid
        );
    }
}
