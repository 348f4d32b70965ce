//! The README's table of JSON-RPC errors is the one `Reason` generates: a
//! reason added, renamed or moved to another class fails here until the
//! README says so too.

#[test]
fn the_readme_error_table_comes_from_the_reason_enum() {
    let readme = include_str!("../README.md");
    let table = mcpgate::domain::reason::jsonrpc_table();
    assert!(
        readme.contains(table.trim_end()),
        "README.md's error table differs from the Reason enum; it should read:\n\n{table}"
    );
}

#[test]
fn every_reason_has_a_stable_distinct_code() {
    use mcpgate::domain::Reason;
    let codes: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), Reason::ALL.len());
    for reason in Reason::ALL {
        assert_eq!(Reason::from_code(reason.code()), Some(*reason));
        assert!(
            reason
                .code()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        );
    }
}
