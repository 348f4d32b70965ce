//! Redirect URIs: exact matching (OAuth 2.1 §2.3.1), except that a loopback
//! redirect of a native app may use any port (RFC 8252 §7.3); and which URIs a
//! client may register at all.

use reqwest::Url;

fn is_loopback_host(url: &Url) -> bool {
    matches!(
        url.host_str(),
        Some("127.0.0.1") | Some("[::1]") | Some("localhost")
    )
}

/// Whether `presented` is one of `registered`.
pub fn matches(registered: &[String], presented: &str) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    let Ok(presented_url) = Url::parse(presented) else {
        return false;
    };
    if presented_url.scheme() != "http" || !is_loopback_host(&presented_url) {
        return false;
    }
    registered.iter().any(|r| {
        let Ok(mut registered_url) = Url::parse(r) else {
            return false;
        };
        if registered_url.scheme() != "http" || !is_loopback_host(&registered_url) {
            return false;
        }
        // Everything but the port must be the same.
        if registered_url.set_port(presented_url.port()).is_err() {
            return false;
        }
        registered_url.as_str() == presented_url.as_str()
    })
}

/// Whether a client may register `uri`: absolute, no fragment, no userinfo;
/// `https`, `http` on loopback only, or a native app's private-use scheme —
/// never a scheme a browser would run or read locally.
pub fn acceptable(uri: &str) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("redirect URI '{uri}' is not a URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("redirect URI '{uri}' has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("redirect URI '{uri}' carries credentials"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "http" if is_loopback_host(&url) => Ok(()),
        "http" => Err(format!(
            "redirect URI '{uri}': plain http is allowed on loopback only"
        )),
        "https" | "javascript" | "data" | "file" | "about" | "blob" | "vbscript" | "ftp" | "ws"
        | "wss" => Err(format!("redirect URI '{uri}' has a forbidden scheme")),
        // RFC 8252 §7.1: private-use schemes (`com.example.app:/cb`, `cursor://…`).
        _ => Ok(()),
    }
}

/// Where the person will be sent back, as the consent page shows it.
pub fn shown_host(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) => match url.host_str() {
            Some(host) => match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            },
            None => format!("{}: (an app on this device)", url.scheme()),
        },
        Err(_) => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_except_loopback_ports() {
        let registered = vec![
            "https://claude.ai/api/mcp/auth_callback".to_owned(),
            "http://127.0.0.1/callback".to_owned(),
        ];
        let cases = [
            ("https://claude.ai/api/mcp/auth_callback", true),
            ("https://claude.ai/api/mcp/auth_callback/", false),
            ("https://claude.ai/api/mcp/auth_callback?x=1", false),
            ("https://evil.example/api/mcp/auth_callback", false),
            (
                "https://claude.ai.evil.example/api/mcp/auth_callback",
                false,
            ),
            ("http://127.0.0.1:53682/callback", true),
            ("http://127.0.0.1/callback", true),
            ("http://127.0.0.1:53682/other", false),
            ("http://localhost:53682/callback", false),
            ("https://127.0.0.1:53682/callback", false),
        ];
        for (presented, expected) in cases {
            assert_eq!(matches(&registered, presented), expected, "{presented}");
        }
    }

    #[test]
    fn registrable_redirect_uris() {
        for ok in [
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://127.0.0.1:3000/cb",
            "http://localhost/cb",
            "com.example.app:/oauth",
            "cursor://anysphere.cursor-mcp/oauth/callback",
        ] {
            assert!(acceptable(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://x.example/cb#frag",
            "https://user:pw@x.example/cb",
            "/relative",
            "file:///etc/passwd",
        ] {
            assert!(acceptable(bad).is_err(), "{bad}");
        }
    }
}
