//! `service.action` globs, as policy, hooks, PII and classification rules use them.

/// Glob match: `*` matches any run of characters (also none), `?` exactly one.
///
/// Runs on every call for each policy, hook and PII rule, so it allocates
/// nothing: it walks the UTF-8 bytes. `*` and `?` are ASCII, literal
/// characters compare byte for byte, and every step over the text (a `?`,
/// a `*` taking one more) moves by a whole character, so a position in the
/// text is always at a character's start when a wildcard looks at it.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it matched up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            ti += char_len(t[ti]);
        } else if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = backtrack {
            let matched = matched + char_len(t[matched]);
            pi = star + 1;
            ti = matched;
            backtrack = Some((star, matched));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// The length of the UTF-8 character that starts with `lead`.
fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        for (pattern, text, expected) in [
            ("jira.delete_*", "jira.delete_issue", true),
            ("jira.delete_*", "jira.delete_", true),
            ("jira.delete_*", "jira.get_issue", false),
            ("*.post_message", "slack.post_message", true),
            ("slack.?ost*", "slack.post_message", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("*", "", true),
            ("?", "", false),
            // `?` is one character, however many bytes it takes.
            ("caf?", "café", true),
            ("caf??", "café", false),
            ("?.x", "€.x", true),
            ("*é*", "résumé", true),
            ("r*s?m?", "résumé", true),
            ("*€", "5 €", true),
            ("*€", "5 £", false),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    /// The shell's meaning, written the slow and obvious way.
    fn reference(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some('*'), _) => reference(&p[1..], t) || (!t.is_empty() && reference(p, &t[1..])),
            (Some(_), None) => false,
            (Some('?'), Some(_)) => reference(&p[1..], &t[1..]),
            (Some(c), Some(d)) => c == d && reference(&p[1..], &t[1..]),
        }
    }

    #[test]
    fn globs_agree_with_the_reference_on_every_short_pattern_and_text() {
        // Every pattern and text up to four characters over a small alphabet
        // with ASCII and multi-byte characters (and a text's own `*`, which
        // the pattern's `*` matches like any other character).
        let alphabet = ['a', 'é', '€', '*'];
        let strings = |symbols: &[char]| {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..4 {
                let next: Vec<String> = last
                    .iter()
                    .flat_map(|s| symbols.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(next.iter().cloned());
                last = next;
            }
            out
        };
        let patterns = strings(&['a', 'é', '*', '?']);
        let texts = strings(&alphabet);
        for pattern in &patterns {
            let p: Vec<char> = pattern.chars().collect();
            for text in &texts {
                let t: Vec<char> = text.chars().collect();
                assert_eq!(
                    glob_match(pattern, text),
                    reference(&p, &t),
                    "{pattern:?} ~ {text:?}"
                );
            }
        }
    }
}
