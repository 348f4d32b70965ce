//! Detectors for personal data in free text: email, phone, IBAN (mod-97),
//! payment card (Luhn + issuer ranges), IPv4/IPv6, and operator patterns.
//! Each finds byte spans; overlapping finds keep the most specific one.

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Email,
    Phone,
    Iban,
    Card,
    Ip,
    Person,
    Custom(u16),
}

impl Entity {
    /// The label used in pseudonyms and statistics.
    pub fn label(self) -> &'static str {
        match self {
            Entity::Email => "EMAIL",
            Entity::Phone => "PHONE",
            Entity::Iban => "IBAN",
            Entity::Card => "CARD",
            Entity::Ip => "IP",
            Entity::Person => "PERSON",
            Entity::Custom(_) => "CUSTOM",
        }
    }

    /// Preference when two finds overlap (higher wins).
    fn rank(self) -> u8 {
        match self {
            Entity::Email => 6,
            Entity::Iban => 5,
            Entity::Card => 4,
            Entity::Ip => 3,
            Entity::Custom(_) => 2,
            Entity::Phone => 1,
            Entity::Person => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Find {
    pub entity: Entity,
    pub start: usize,
    pub end: usize,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)[a-z0-9][a-z0-9._%+-]{0,63}@[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)*\.[a-z]{2,24}(?-u:\b)")
        .expect("email regex")
});
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)[a-z]{2}[0-9]{2}(?:[ ]?[a-z0-9]){11,30}(?-u:\b)").expect("iban regex")
});
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| {
    // Digits with the separators people and systems put in numbers.
    Regex::new(r"\+?\(?\d[\d ().\-/]{5,22}\d").expect("digit run regex")
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?-u:\b)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?-u:\b)",
    )
    .expect("ipv4 regex")
});
static IPV6_CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}|::[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}")
        .expect("ipv6 regex")
});
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{3}-\d{2}-\d{4}$").expect("ssn regex"));
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?:[ T]\d{1,2}[:.]\d{2}.*)?$")
        .expect("date regex")
});

/// Words before a number that make it an identifier rather than a phone.
const NOT_A_PHONE_BEFORE: [&str; 14] = [
    "order",
    "invoice",
    "ticket",
    "ref",
    "reference",
    "id",
    "no",
    "#",
    "isbn",
    "version",
    "v",
    "build",
    "account",
    "po",
];
const PHONE_CONTEXT: [&str; 8] = [
    "phone", "tel", "call", "mobile", "fax", "cell", "contact", "whatsapp",
];

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer ranges and lengths (Visa, Mastercard, Amex, Discover, Diners, JCB,
/// Maestro, UnionPay): Luhn alone would call one random number in ten a card.
pub fn card_issuer_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| {
        digits
            .iter()
            .take(k)
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    let p6 = prefix(6);
    match digits.first() {
        Some(4) => matches!(n, 13 | 16 | 19),
        Some(5) => {
            ((51..=55).contains(&p2) && n == 16)
                || ((50..=59).contains(&p2) && (12..=19).contains(&n))
        }
        Some(2) => ((222_100..=272_099).contains(&p6) && n == 16) || (p4 == 2131 && n == 15),
        Some(3) => {
            ((p2 == 34 || p2 == 37) && n == 15)
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&n))
                || (p2 == 35 && (16..=19).contains(&n))
        }
        Some(6) => (12..=19).contains(&n),
        Some(1) => p4 == 1800 && n == 15,
        // Maestro's 0604 range.
        Some(0) => p4 == 604 && (12..=19).contains(&n),
        _ => false,
    }
}

/// ISO 13616 mod-97 check of an IBAN (spaces ignored).
pub fn iban_ok(text: &str) -> bool {
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if compact.len() < 15
        || compact.len() > 34
        || !compact.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let value = c.to_digit(36).expect("alphanumeric");
        if value >= 10 {
            remainder = (remainder * 100 + value) % 97;
        } else {
            remainder = (remainder * 10 + value) % 97;
        }
    }
    remainder == 1
}

fn word_before(text: &str, start: usize) -> String {
    text[..start]
        .trim_end_matches([' ', ':', '.', '=', '('])
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_start_matches(['(', '[', '"', '\''])
        .to_ascii_lowercase()
}

fn near_phone_words(text: &str, start: usize) -> bool {
    let from = text[..start]
        .char_indices()
        .rev()
        .nth(30)
        .map_or(0, |(i, _)| i);
    let window = text[from..start].to_ascii_lowercase();
    PHONE_CONTEXT.iter().any(|w| window.contains(w))
}

/// Words shortly before a number that make it another kind of identifier.
const OTHER_NUMBER_CONTEXT: [&str; 12] = [
    "license",
    "licence",
    "ssn",
    "passport",
    "social security",
    "card number",
    "account number",
    "zip",
    "postal",
    "postcode",
    "post code",
    "address",
];
/// Words right after a number that make it a house number.
const STREET_WORDS: [&str; 22] = [
    "street",
    "st",
    "road",
    "rd",
    "avenue",
    "ave",
    "drive",
    "dr",
    "lane",
    "ln",
    "boulevard",
    "blvd",
    "way",
    "court",
    "ct",
    "place",
    "rue",
    "strasse",
    "straße",
    "via",
    "calle",
    "suite",
];
/// Postal codes that look like short phone numbers: Portugal 1234-567, Brazil 12345-678.
static POSTAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:\d{4}-\d{3}|\d{5}-\d{3})$").expect("postal regex"));

/// `x4587`, ` ext. 12`: a phone extension right after the number.
fn extension_len(after: &str) -> usize {
    static EXTENSION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(?i)(?:x|\s?ext\.?\s?)\d{1,6}\b").expect("extension regex"));
    EXTENSION.find(after).map_or(0, |m| m.end())
}

/// Is this run of digits and separators a phone number?
fn phone_shaped(text: &str, start: usize, candidate: &str) -> bool {
    let digits: Vec<u8> = candidate
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if !(7..=15).contains(&digits.len()) {
        return false;
    }
    if SSN.is_match(candidate) || DATE.is_match(candidate) {
        return false;
    }
    let groups: Vec<&str> = candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let separators = candidate
        .chars()
        .filter(|c| matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .count();
    let after_text = &text[start + candidate.len()..];
    // A glued label that names a line ("…-Fax", "…-Office") is as good as a phone word.
    let line_label = after_text.strip_prefix('-').is_some_and(|rest| {
        let word: String = rest.chars().take_while(|c| c.is_alphabetic()).collect();
        matches!(
            word.to_ascii_lowercase().as_str(),
            "fax" | "office" | "mobile" | "home" | "work" | "cell" | "phone" | "tel"
        )
    });
    let phone_words = line_label || near_phone_words(text, start);
    let before = word_before(text, start);
    if NOT_A_PHONE_BEFORE
        .iter()
        .any(|w| before == *w || before.ends_with('#'))
    {
        return false;
    }
    let window_start = text[..start]
        .char_indices()
        .rev()
        .nth(40)
        .map_or(0, |(i, _)| i);
    let window = text[window_start..start].to_ascii_lowercase();
    if !phone_words && OTHER_NUMBER_CONTEXT.iter().any(|w| window.contains(w)) {
        return false;
    }
    // Right after a letter or currency sign it is part of an identifier or a price.
    if let Some(prev) = text[..start].chars().next_back()
        && (prev.is_alphanumeric() || matches!(prev, '$' | '€' | '£' | '#' | '_' | '-' | '/' | '.'))
    {
        return false;
    }
    let after = &text[start + candidate.len()..];
    // A label glued on ("…-Office"), an extension, or a sentence end is fine.
    let labelled = (after.starts_with('-') && after[1..].starts_with(|c: char| c.is_alphabetic()))
        || extension_len(after) > 0;
    let sentence_end = after.starts_with('.')
        && after[1..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_digit());
    if let Some(next) = after.chars().next()
        && (next.is_alphanumeric() || matches!(next, '_' | '%' | '€' | '$' | '.' | '-' | '/' | ':'))
        && !labelled
        && !sentence_end
    {
        return false;
    }
    if !phone_words && POSTAL.is_match(candidate) {
        return false;
    }
    // "3747 3911 fourth avenue": a house number, whatever its case.
    let next_words: Vec<String> = after
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(3)
        .map(str::to_lowercase)
        .collect();
    if !phone_words
        && next_words
            .iter()
            .any(|w| STREET_WORDS.contains(&w.as_str()))
    {
        return false;
    }
    // "370 3911 Fourth Avenue": house numbers before a street name.
    let plain_groups = !candidate.contains(['+', '(', '-', '.', '/']);
    if plain_groups
        && after.starts_with(' ')
        && after[1..].starts_with(|c: char| c.is_uppercase())
        && !phone_words
    {
        return false;
    }
    if candidate.contains('.') && groups.len() == 2 {
        return false;
    }
    if candidate.starts_with('+') || candidate.starts_with('(') {
        return true;
    }
    if separators == 0 {
        // A bare run of digits: only with a phone word nearby, or a trunk prefix.
        return phone_words || (digits[0] == 0 && (10..=11).contains(&digits.len()));
    }
    // Grouped the way phone numbers are written: short digit groups.
    let trunk = digits[0] == 0 && (10..=11).contains(&digits.len());
    groups.len() >= 2 && (groups.iter().all(|g| g.len() <= 6) || phone_words || trunk)
}

/// Operator-defined patterns: a label and a regex.
pub struct CustomPattern {
    pub label: String,
    pub regex: Regex,
}

fn push(finds: &mut Vec<Find>, entity: Entity, start: usize, end: usize) {
    finds.push(Find { entity, start, end });
}

/// Every find in `text`, non-overlapping, in order.
pub fn scan(text: &str, custom: &[CustomPattern]) -> Vec<Find> {
    let mut finds = Vec::new();
    // Cheap gates: most text has no '@', few digits, fewer colons.
    let has_at = text.contains('@');
    let has_digit = text.bytes().any(|b| b.is_ascii_digit());
    let colons = text.bytes().filter(|b| *b == b':').count();
    for m in EMAIL.find_iter(if has_at { text } else { "" }) {
        push(&mut finds, Entity::Email, m.start(), m.end());
    }
    for m in IBAN.find_iter(if has_digit { text } else { "" }) {
        // The pattern may run on into the next word ("… 6119 to"): retry shorter.
        let mut candidate = m.as_str();
        loop {
            if iban_ok(candidate) {
                push(
                    &mut finds,
                    Entity::Iban,
                    m.start(),
                    m.start() + candidate.len(),
                );
                break;
            }
            match candidate.rfind(' ') {
                Some(cut) if cut >= 15 => candidate = &candidate[..cut],
                _ => break,
            }
        }
    }
    for m in IPV4.find_iter(if has_digit { text } else { "" }) {
        let after = &text[m.end()..];
        let before = &text[..m.start()];
        // Not part of a longer dotted run (a version or OID).
        let dotted_run = before.ends_with('.')
            || (after.starts_with('.') && after[1..].starts_with(|c: char| c.is_ascii_digit()));
        if !dotted_run {
            push(&mut finds, Entity::Ip, m.start(), m.end());
        }
    }
    for m in IPV6_CANDIDATE.find_iter(if colons >= 2 { text } else { "" }) {
        let s = m.as_str().trim_end_matches(':');
        if s.matches(':').count() >= 2
            && s.parse::<Ipv6Addr>().is_ok()
            && s.chars().any(|c| c.is_ascii_hexdigit())
        {
            push(&mut finds, Entity::Ip, m.start(), m.start() + s.len());
        }
    }
    for m in DIGIT_RUN.find_iter(if has_digit { text } else { "" }) {
        let candidate = m.as_str().trim_end_matches([' ', '-', '.', '/', '(']);
        let start = m.start();
        let digits: Vec<u8> = candidate
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        let separators_ok = candidate
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
        let glued = text[..start]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
            || text[start + candidate.len()..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
        if separators_ok
            && !glued
            && (12..=19).contains(&digits.len())
            && luhn(&digits)
            && card_issuer_ok(&digits)
        {
            push(&mut finds, Entity::Card, start, start + candidate.len());
        } else if phone_shaped(text, start, candidate) {
            let end = start + candidate.len() + extension_len(&text[start + candidate.len()..]);
            push(&mut finds, Entity::Phone, start, end);
        }
    }
    for (index, pattern) in custom.iter().enumerate() {
        for m in pattern.regex.find_iter(text) {
            push(&mut finds, Entity::Custom(index as u16), m.start(), m.end());
        }
    }
    resolve_overlaps(finds)
}

/// Keep, among overlapping finds, the highest-ranked (then the longest).
fn resolve_overlaps(mut finds: Vec<Find>) -> Vec<Find> {
    finds.sort_by(|a, b| {
        b.entity
            .rank()
            .cmp(&a.entity.rank())
            .then((b.end - b.start).cmp(&(a.end - a.start)))
    });
    let mut kept: Vec<Find> = Vec::new();
    for find in finds {
        if kept
            .iter()
            .all(|k| find.end <= k.start || find.start >= k.end)
        {
            kept.push(find);
        }
    }
    kept.sort_by_key(|f| f.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Entity, String)> {
        scan(text, &[])
            .into_iter()
            .map(|f| (f.entity, text[f.start..f.end].to_owned()))
            .collect()
    }

    #[test]
    fn checksums() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_ok("DE89370400440532013000"));
        assert!(!iban_ok("DE89370400440532013001"));
    }

    #[test]
    fn finds_what_it_should() {
        assert_eq!(kinds("mail ma.rie+x@example.co.uk now")[0].0, Entity::Email);
        assert_eq!(
            kinds("card 4111 1111 1111 1111 ok")[0],
            (Entity::Card, "4111 1111 1111 1111".into())
        );
        assert_eq!(
            kinds("IBAN DE89 3704 0044 0532 0130 00.")[0].0,
            Entity::Iban
        );
        assert_eq!(
            kinds("from 10.0.0.12 and 2001:db8::8a2e:370:7334")[0].0,
            Entity::Ip
        );
        assert_eq!(
            kinds("from 10.0.0.12 and 2001:db8::8a2e:370:7334")[1],
            (Entity::Ip, "2001:db8::8a2e:370:7334".into())
        );
        for phone in [
            "+44 20 7946 0958",
            "(415) 555-2671",
            "905-674-3793",
            "07700 900123",
            "+49 30 901820",
        ] {
            assert_eq!(
                kinds(&format!("call {phone} today")),
                vec![(Entity::Phone, phone.to_owned())],
                "{phone}"
            );
        }
    }

    #[test]
    fn leaves_hard_negatives_alone() {
        for text in [
            "order #1234567890 shipped",
            "Order 12345678 shipped",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "version 2.14.1 released",
            "at 2026-11-24 09:00:00",
            "price $1,299.99 or 1299.99 EUR",
            "ISBN 978-3-16-148410-0",
            "ticket PROJ-123456",
            "4111111111111112 is not a card",
            "timestamp 1732435200",
        ] {
            assert!(kinds(text).is_empty(), "{text}: {:?}", kinds(text));
        }
    }
}
