//! Markdown → Atlassian Document Format (Jira descriptions and comments).
//! Covers what AI clients write: paragraphs, `#` headings, `-`/`*` and `1.`
//! lists, fenced code blocks, `**bold**`, `*italic*`, `` `code` `` and
//! `[links](url)`. Anything else stays text.

use serde_json::{Value, json};

pub fn markdown_to_adf(markdown: &str) -> Value {
    let mut content = Vec::new();
    let mut lines = markdown.lines().peekable();
    let mut paragraph: Vec<&str> = Vec::new();
    let flush = |paragraph: &mut Vec<&str>, content: &mut Vec<Value>| {
        if !paragraph.is_empty() {
            let text = paragraph.join(" ");
            content.push(json!({"type": "paragraph", "content": inline(&text)}));
            paragraph.clear();
        }
    };
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(language) = trimmed.strip_prefix("```") {
            flush(&mut paragraph, &mut content);
            let mut code = Vec::new();
            for next in lines.by_ref() {
                if next.trim_start().starts_with("```") {
                    break;
                }
                code.push(next);
            }
            let mut block = json!({"type": "codeBlock", "content": [{"type": "text", "text": code.join("\n")}]});
            if !language.trim().is_empty() {
                block["attrs"] = json!({"language": language.trim()});
            }
            content.push(block);
        } else if let Some((level, text)) = heading(trimmed) {
            flush(&mut paragraph, &mut content);
            content.push(
                json!({"type": "heading", "attrs": {"level": level}, "content": inline(text)}),
            );
        } else if let Some((ordered, _)) = list_item(trimmed) {
            flush(&mut paragraph, &mut content);
            let mut items = vec![list_item(trimmed).map(|(_, t)| t).unwrap_or_default()];
            while let Some(next) = lines.peek() {
                match list_item(next.trim_start()) {
                    Some((o, text)) if o == ordered => {
                        items.push(text);
                        lines.next();
                    }
                    _ => break,
                }
            }
            let items: Vec<Value> = items
                .into_iter()
                .map(|text| json!({"type": "listItem", "content": [{"type": "paragraph", "content": inline(text)}]}))
                .collect();
            let kind = if ordered { "orderedList" } else { "bulletList" };
            content.push(json!({"type": kind, "content": items}));
        } else if trimmed.is_empty() {
            flush(&mut paragraph, &mut content);
        } else {
            paragraph.push(trimmed);
        }
    }
    flush(&mut paragraph, &mut content);
    json!({"type": "doc", "version": 1, "content": content})
}

fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&level) && line[level..].starts_with(' ') {
        Some((level, line[level..].trim()))
    } else {
        None
    }
}

/// `(ordered, text)` of a list item line.
fn list_item(line: &str) -> Option<(bool, &str)> {
    if let Some(text) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
        return Some((false, text));
    }
    let digits = line.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && line[digits..].starts_with(". ") {
        return Some((true, &line[digits + 2..]));
    }
    None
}

/// Inline marks: `**strong**`, `*em*`, `` `code` ``, `[text](url)`.
fn inline(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    let push_plain = |plain: &mut String, out: &mut Vec<Value>| {
        if !plain.is_empty() {
            out.push(json!({"type": "text", "text": std::mem::take(plain)}));
        }
    };
    while let Some(c) = rest.chars().next() {
        let marked = if let Some(inner) = rest.strip_prefix("**") {
            inner
                .find("**")
                .map(|end| (&inner[..end], json!([{"type": "strong"}]), end + 4))
        } else if let Some(inner) = rest.strip_prefix('`') {
            inner
                .find('`')
                .map(|end| (&inner[..end], json!([{"type": "code"}]), end + 2))
        } else if let Some(inner) = rest.strip_prefix('*') {
            inner
                .find('*')
                .filter(|end| *end > 0)
                .map(|end| (&inner[..end], json!([{"type": "em"}]), end + 2))
        } else if let Some(inner) = rest.strip_prefix('[') {
            inner.find("](").and_then(|mid| {
                inner[mid + 2..].find(')').map(|close| {
                    let href = &inner[mid + 2..mid + 2 + close];
                    (
                        &inner[..mid],
                        json!([{"type": "link", "attrs": {"href": href}}]),
                        mid + close + 4,
                    )
                })
            })
        } else {
            None
        };
        match marked {
            Some((inner, marks, consumed)) if !inner.is_empty() => {
                push_plain(&mut plain, &mut out);
                out.push(json!({"type": "text", "text": inner, "marks": marks}));
                rest = &rest[consumed..];
            }
            _ => {
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    push_plain(&mut plain, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_adf() {
        let adf = markdown_to_adf(
            "# Outage\nThe **API** was *down*, see [runbook](https://x.example).\n\n- one\n- `two`\n\n1. a\n2. b\n```sql\nselect 1\n```",
        );
        let content = adf["content"].as_array().unwrap();
        assert_eq!(adf["type"], "doc");
        assert_eq!(content[0]["type"], "heading");
        assert_eq!(content[0]["attrs"]["level"], 1);
        let para = content[1]["content"].as_array().unwrap();
        assert_eq!(
            para[1],
            json!({"type": "text", "text": "API", "marks": [{"type": "strong"}]})
        );
        assert_eq!(para[3]["marks"][0]["type"], "em");
        assert_eq!(para[5]["marks"][0]["attrs"]["href"], "https://x.example");
        assert_eq!(content[2]["type"], "bulletList");
        assert_eq!(content[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(content[3]["type"], "orderedList");
        assert_eq!(content[4]["type"], "codeBlock");
        assert_eq!(content[4]["attrs"]["language"], "sql");
        assert_eq!(content[4]["content"][0]["text"], "select 1");
    }
}
