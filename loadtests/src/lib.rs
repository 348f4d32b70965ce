//! What the load generators share.

/// The 50-hook policy set: every built-in pre kind, about half with CEL
/// `when:` conditions, as a `hooks:` section (a hooks file, or the tail of a
/// gateway config). Calls that carry `text` (starting with a letter) and
/// `channel` (`#eng-…`) pass every hook; the hooks still evaluate.
pub fn policy_hooks_yaml() -> String {
    let mut yaml = String::from("hooks:\n");
    for i in 0..50 {
        let body = match i % 10 {
            0 => "    when: 'args.text.contains(\"forbidden\") && risk == \"write\"'\n    kind: deny\n    message: no\n".to_owned(),
            1 => "    kind: endpoint_allowlist\n    field: channel\n    allow: ['#finance', '#ops-*', '#eng-*']\n".to_owned(),
            2 => "    kind: validate\n    required: [text]\n    patterns: { text: '^[A-Za-z]' }\n".to_owned(),
            3 => format!("    kind: set_default\n    values: {{ field{i}: x }}\n"),
            4 => "    when: 'subject.endsWith(\"@example.com\") && size(args.text) < 10000'\n    kind: warn\n    message: careful\n".to_owned(),
            5 => "    match: { action: 'delete_*' }\n    kind: deny\n    message: no deletes\n".to_owned(),
            6 => "    when: 'actor.startsWith(\"windmill:\") || service == \"slack\"'\n    kind: normalize_text\n    fields: [text]\n".to_owned(),
            7 => "    when: 'has(args.priority) && args.priority == \"urgent\"'\n    kind: require_confirmation\n".to_owned(),
            8 => "    when: 'args.channel in [\"#finance\", \"#ops-alerts\"]'\n    kind: set_default\n    values: { thread: none }\n".to_owned(),
            _ => "    match: { service: slack, risk: [write, high_risk] }\n    when: 'action == \"post_message\"'\n    kind: validate\n    required: [channel]\n".to_owned(),
        };
        yaml.push_str(&format!("  - name: hook{i}\n    order: {i}\n{body}"));
    }
    yaml
}

/// A gateway run inside the load generator's process, serving HTTP on a free
/// local port: the config from `yaml` (named `name` in errors), its store
/// opened, and each of `services` connected (its catalog known).
pub struct InProcessGateway {
    pub gw: std::sync::Arc<mcpgate::gateway::Gateway>,
    pub pool: mcpgate::storage::Db,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl InProcessGateway {
    pub async fn start(yaml: &str, name: &str, services: &[&str]) -> anyhow::Result<Self> {
        let config = mcpgate::config::Config::parse(yaml, name)?;
        let pool = mcpgate::storage::connect(&config).await?;
        let gw = mcpgate::gateway::Gateway::start(config, pool.clone()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server_gw = gw.clone();
        tokio::spawn(async move {
            let _ = mcpgate::http::serve(server_gw, listener, std::future::pending()).await;
        });
        while services
            .iter()
            .any(|service| gw.catalogs().catalog(service).is_none())
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Self { gw, pool, base })
    }

    /// A new gateway token for `email`.
    pub async fn token(&self, email: &str) -> anyhow::Result<String> {
        Ok(
            mcpgate::tokens::create(&self.pool, email, Some("load"), None)
                .await?
                .token,
        )
    }
}
