//! Per-address token buckets for the public OAuth endpoints (`oauth:
//! rate_limits`). Hand-written: a bucket is a few lines, and the gateway
//! needs two things a general crate does not give together — IPv6 keyed by
//! /64 (one host owns the whole prefix) and a bound on tracked addresses.
//! In memory per replica: N replicas allow N times the rate, which is still
//! a bound on what one address can make the store and audit log do.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;

use crate::authserver::AuthServer;
use crate::config::oauth::RateLimit;
use crate::domain::{Reason, Refusal};

/// At most one audit row per address and endpoint in this interval while
/// it is being refused: the refusals of a flood are counted into it, so
/// the audit log is not the flood's next target.
const AUDIT_EVERY: Duration = Duration::from_secs(10);

/// Where all addresses past `tracked_addresses` share one bucket.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

pub struct RateLimiter {
    limit: RateLimit,
    max_tracked: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Refused since the last audit row.
    refused: u64,
    audited_at: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused: retry after this many seconds. `audit` is the number of
    /// refusals to record now (this one included), or `None` when an audit
    /// row for this address was written less than [`AUDIT_EVERY`] ago.
    Limited {
        retry_after: u64,
        audit: Option<u64>,
    },
}

impl RateLimiter {
    pub fn new(limit: RateLimit, max_tracked: usize) -> Self {
        Self {
            limit,
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, address: IpAddr) -> Verdict {
        self.check_at(address, Instant::now())
    }

    fn check_at(&self, address: IpAddr, now: Instant) -> Verdict {
        if self.limit.per_minute == 0 {
            return Verdict::Allowed;
        }
        let burst = f64::from(self.limit.burst.max(1));
        let per_sec = f64::from(self.limit.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = prefix(address);
        if !buckets.contains_key(&key) && buckets.len() >= self.max_tracked {
            // A bucket that has refilled is the same as none: drop those first.
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < burst
            });
            if buckets.len() >= self.max_tracked {
                key = OVERFLOW;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
            refused: 0,
            audited_at: None,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Allowed;
        }
        // (Less a hair: 0.9 / 0.1 is 9.000000000000002 in floating point.)
        let retry_after = ((1.0 - bucket.tokens) / per_sec - 1e-9).ceil().max(1.0) as u64;
        bucket.refused += 1;
        let due = bucket
            .audited_at
            .is_none_or(|at| now.saturating_duration_since(at) >= AUDIT_EVERY);
        let audit = due.then(|| {
            bucket.audited_at = Some(now);
            std::mem::take(&mut bucket.refused)
        });
        Verdict::Limited { retry_after, audit }
    }
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (an IPv4-mapped
/// IPv6 address as the IPv4 address it is).
fn prefix(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

/// The endpoints limited, each with its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Register,
    /// Only the authorization server's grants (`authorization_code`,
    /// `refresh_token`); the delegation token exchange passes untouched.
    Token,
    Authorize,
}

impl Endpoint {
    /// The audit row's tool.
    fn tool(self) -> &'static str {
        match self {
            Endpoint::Register => "oauth:register",
            Endpoint::Token => "oauth:token",
            Endpoint::Authorize => "oauth:authorize",
        }
    }
}

struct Layer {
    server: Arc<AuthServer>,
    endpoint: Endpoint,
    limiter: RateLimiter,
}

/// `route` behind the rate limit of `endpoint` (`oauth.rate_limits`).
pub fn limited<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S>,
    server: &Arc<AuthServer>,
    endpoint: Endpoint,
) -> MethodRouter<S> {
    let limits = &server.config.oauth.rate_limits;
    let limit = match endpoint {
        Endpoint::Register => limits.register,
        Endpoint::Token => limits.token,
        Endpoint::Authorize => limits.authorize,
    };
    let layer = Arc::new(Layer {
        server: server.clone(),
        endpoint,
        limiter: RateLimiter::new(limit, limits.tracked_addresses),
    });
    route.layer(axum::middleware::from_fn_with_state(layer, limit_request))
}

/// The largest token request body read to find its grant type.
const TOKEN_BODY_LIMIT: usize = 64 * 1024;

async fn limit_request(State(layer): State<Arc<Layer>>, request: Request, next: Next) -> Response {
    let server = &layer.server;
    if !server.config.oauth.enabled {
        return next.run(request).await;
    }
    let request = if layer.endpoint == Endpoint::Token {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, TOKEN_BODY_LIMIT).await else {
            let refusal = Refusal::new(
                Reason::InvalidRequest,
                format!("a token request is at most {TOKEN_BODY_LIMIT} bytes"),
            );
            return super::server::oauth_error(&refusal);
        };
        let ours = form_urlencoded::parse(&bytes).any(|(k, v)| {
            k == "grant_type" && matches!(v.as_ref(), "authorization_code" | "refresh_token")
        });
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        if !ours {
            return next.run(request).await;
        }
        request
    } else {
        request
    };
    let address = client_address(
        &request,
        server.config.oauth.rate_limits.trust_forwarded_for,
    );
    let Verdict::Limited { retry_after, audit } = layer.limiter.check(address) else {
        return next.run(request).await;
    };
    let tool = layer.endpoint.tool();
    if let Some(refused) = audit {
        let what = format!(
            "{refused} request(s) from {address} refused in the last {} s at most: over the rate limit",
            AUDIT_EVERY.as_secs()
        );
        server
            .refuse(
                "anonymous",
                None,
                tool,
                Refusal::new(Reason::RateLimited, what),
            )
            .await;
    }
    let refusal = Refusal::new(
        Reason::RateLimited,
        format!("too many requests from your address: retry in {retry_after} s"),
    );
    let mut response = super::server::oauth_error(&refusal);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// The caller's address: the peer of the connection, or with
/// `trust_forwarded_for` the last `X-Forwarded-For` entry (the one the
/// proxy in front wrote). Unknown (a test router without a socket): one
/// shared key.
fn client_address(request: &Request, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| {
            request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|last| last.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    forwarded
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32, max_tracked: usize) -> RateLimiter {
        RateLimiter::new(RateLimit { per_minute, burst }, max_tracked)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_passes_then_refusals_say_when_to_retry_and_the_bucket_refills() {
        let limiter = limiter(6, 3, 10); // one token per 10 s
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(limiter.check_at(a, t0), Verdict::Allowed);
        }
        assert_eq!(
            limiter.check_at(a, t0),
            Verdict::Limited {
                retry_after: 10,
                audit: Some(1)
            }
        );
        // Another address has its own bucket.
        assert_eq!(limiter.check_at(ip("192.0.2.2"), t0), Verdict::Allowed);
        // Refused again soon after: counted, not audited again.
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            limiter.check_at(a, t1),
            Verdict::Limited {
                retry_after: 6,
                audit: None
            }
        );
        // Ten seconds on, one token is back.
        assert_eq!(
            limiter.check_at(a, t0 + Duration::from_secs(10)),
            Verdict::Allowed
        );
        // The next refusal is audited with the one counted in between.
        assert_eq!(
            limiter.check_at(a, t0 + Duration::from_secs(11)),
            Verdict::Limited {
                retry_after: 9,
                audit: Some(2)
            }
        );
    }

    #[test]
    fn ipv6_shares_a_bucket_per_64_and_zero_per_minute_is_off() {
        let limiter = limiter(1, 1, 10);
        let t0 = Instant::now();
        assert_eq!(
            limiter.check_at(ip("2001:db8:1:2::1"), t0),
            Verdict::Allowed
        );
        assert!(matches!(
            limiter.check_at(ip("2001:db8:1:2:ffff::9"), t0),
            Verdict::Limited { .. }
        ));
        assert_eq!(
            limiter.check_at(ip("2001:db8:1:3::1"), t0),
            Verdict::Allowed
        );
        assert_eq!(prefix(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let off = super::RateLimiter::new(
            RateLimit {
                per_minute: 0,
                burst: 0,
            },
            1,
        );
        for _ in 0..100 {
            assert_eq!(off.check_at(ip("192.0.2.1"), t0), Verdict::Allowed);
        }
    }

    #[test]
    fn the_address_is_the_peer_unless_a_trusted_proxy_names_it() {
        let mut request = Request::new(axum::body::Body::empty());
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 5], 4000))));
        request.headers_mut().append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.9, 203.0.113.4"),
        );
        assert_eq!(client_address(&request, false), ip("10.0.0.5"));
        // The last entry is what the proxy saw; earlier ones the client wrote.
        assert_eq!(client_address(&request, true), ip("203.0.113.4"));
        request.headers_mut().insert(
            "x-forwarded-for",
            HeaderValue::from_static("not an address"),
        );
        assert_eq!(client_address(&request, true), ip("10.0.0.5"));
    }

    #[test]
    fn past_the_tracked_bound_new_addresses_share_one_bucket() {
        let limiter = limiter(1, 1, 2);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at(ip("192.0.2.1"), t0), Verdict::Allowed);
        assert_eq!(limiter.check_at(ip("192.0.2.2"), t0), Verdict::Allowed);
        // Both buckets are spent, so none can be dropped: the overflow
        // bucket serves the third address, and then refuses the fourth.
        assert_eq!(limiter.check_at(ip("192.0.2.3"), t0), Verdict::Allowed);
        assert!(matches!(
            limiter.check_at(ip("192.0.2.4"), t0),
            Verdict::Limited { .. }
        ));
        // Once the first two have refilled, a new address gets its own.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(limiter.check_at(ip("192.0.2.5"), later), Verdict::Allowed);
        assert!(
            limiter
                .buckets
                .lock()
                .unwrap()
                .contains_key(&ip("192.0.2.5"))
        );
    }
}
