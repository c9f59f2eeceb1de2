//! Property tests of the canonical topology hash: it ignores presentation
//! (key order, whitespace, escaping, number spelling), volatile keys at any
//! depth and earlier duplicates of a key, and it sees every other change.
//!
//! Documents are generated as a small tree type and written to JSON text by
//! the serializer below, which varies the presentation under the control of a
//! seeded random generator.

use std::collections::BTreeMap;

use decnet_agent_client::topology::{canonical_hash, canonical_hash_str, canonical_json};
use proptest::prelude::*;

/// The spec's volatile keys, written out here rather than taken from the
/// library, so a change to the library's list is caught.
const VOLATILE: [&str; 11] = [
    "created_at",
    "status_changed_at",
    "updated_at",
    "last_seen",
    "status",
    "version",
    "last_error",
    "x",
    "y",
    "w",
    "h",
];

/// A JSON document. Object keys are unique; integers keep their decimal text.
#[derive(Clone, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(String),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

/// SplitMix64: a tiny deterministic generator for presentation choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// How a string's characters are written.
#[derive(Clone, Copy, Debug)]
enum Escape {
    /// Raw UTF-8 wherever JSON allows it.
    Raw,
    /// Every non-ASCII or non-printable character as `\uXXXX`.
    Ascii,
    /// A random choice per character among every valid spelling.
    Mixed,
}

/// Presentation choices for [`write_json`].
struct Style {
    rng: Rng,
    shuffle_keys: bool,
    whitespace: bool,
    escape: Escape,
    vary_numbers: bool,
}

impl Style {
    /// Keys in generation order, no whitespace, raw UTF-8, plain numbers.
    fn plain() -> Self {
        Style {
            rng: Rng(0),
            shuffle_keys: false,
            whitespace: false,
            escape: Escape::Raw,
            vary_numbers: false,
        }
    }

    fn with_seed(seed: u64) -> Self {
        Style {
            rng: Rng(seed),
            ..Style::plain()
        }
    }

    /// Every variation at once.
    fn wild(seed: u64) -> Self {
        Style {
            rng: Rng(seed),
            shuffle_keys: true,
            whitespace: true,
            escape: Escape::Mixed,
            vary_numbers: true,
        }
    }

    fn space(&mut self, out: &mut String) {
        if self.whitespace {
            for _ in 0..self.rng.below(4) {
                out.push([' ', '\t', '\n', '\r'][self.rng.below(4)]);
            }
        }
    }

    fn token(&mut self, out: &mut String, token: char) {
        self.space(out);
        out.push(token);
        self.space(out);
    }
}

fn to_json(j: &J, style: &mut Style) -> String {
    let mut out = String::new();
    style.space(&mut out);
    write_json(j, style, &mut out);
    style.space(&mut out);
    out
}

fn write_json(j: &J, style: &mut Style, out: &mut String) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Int(text) => {
            let zero = text.trim_start_matches('-').bytes().all(|b| b == b'0');
            if zero && style.vary_numbers {
                out.push_str(if style.rng.chance(50) { "-0" } else { "0" });
            } else {
                out.push_str(text);
            }
        }
        J::Float(f) => write_float(*f, style, out),
        J::Str(s) => write_str(s, style, out),
        J::Arr(items) => {
            style.token(out, '[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    style.token(out, ',');
                }
                write_json(item, style, out);
            }
            style.token(out, ']');
        }
        J::Obj(entries) => {
            let mut order: Vec<&(String, J)> = entries.iter().collect();
            if style.shuffle_keys {
                style.rng.shuffle(&mut order);
            }
            style.token(out, '{');
            for (i, (key, value)) in order.into_iter().enumerate() {
                if i > 0 {
                    style.token(out, ',');
                }
                write_str(key, style, out);
                style.token(out, ':');
                write_json(value, style, out);
            }
            style.token(out, '}');
        }
    }
}

/// Writes a float in one of several spellings that all read back as `f` and
/// all mark it as a float (a `.` or an exponent).
fn write_float(f: f64, style: &mut Style, out: &mut String) {
    let choice = if style.vary_numbers {
        style.rng.below(5)
    } else {
        0
    };
    let text = match choice {
        1 => format!("{f:e}"),
        2 => {
            let s = format!("{f:E}");
            if s.contains("E-") {
                s
            } else {
                s.replace('E', "E+")
            }
        }
        3 => {
            let s = format!("{f}");
            if s.contains('.') {
                s
            } else {
                format!("{s}.0")
            }
        }
        4 => format!("{f:.3e}"),
        _ => format!("{f:?}"),
    };
    // Choice 4 rounds: only use it when it still denotes the same double.
    let text = if text.parse::<f64>().map(f64::to_bits) == Ok(f.to_bits()) {
        text
    } else {
        format!("{f:?}")
    };
    out.push_str(&text);
}

fn write_u_escape(unit: u16, upper: bool, out: &mut String) {
    if upper {
        out.push_str(&format!("\\u{unit:04X}"));
    } else {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}

fn write_char_escaped(c: char, upper: bool, out: &mut String) {
    let mut units = [0u16; 2];
    for unit in c.encode_utf16(&mut units) {
        write_u_escape(*unit, upper, out);
    }
}

fn short_escape(c: char) -> Option<&'static str> {
    Some(match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '/' => "\\/",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\u{8}' => "\\b",
        '\u{c}' => "\\f",
        _ => return None,
    })
}

fn write_str(s: &str, style: &mut Style, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let must_escape = c < ' ' || c == '"' || c == '\\';
        match style.escape {
            Escape::Raw => match (must_escape, short_escape(c)) {
                (false, _) => out.push(c),
                (true, Some(e)) => out.push_str(e),
                (true, None) => write_char_escaped(c, false, out),
            },
            Escape::Ascii => {
                if !must_escape && (' '..='~').contains(&c) {
                    out.push(c);
                } else if let Some(e) = short_escape(c) {
                    out.push_str(e);
                } else {
                    write_char_escaped(c, false, out);
                }
            }
            Escape::Mixed => {
                let pick = style.rng.below(4);
                if pick == 0 && !must_escape {
                    out.push(c);
                } else if pick == 1 && short_escape(c).is_some() {
                    out.push_str(short_escape(c).unwrap_or_default());
                } else {
                    write_char_escaped(c, style.rng.chance(50), out);
                }
            }
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// Strategies

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range(' ', '~'),
        1 => prop::char::range('\u{0}', '\u{1f}'),
        1 => Just('\u{7f}'),
        1 => prop::char::range('\u{80}', '\u{7ff}'),
        1 => prop::char::range('\u{800}', '\u{d7ff}'),
        1 => prop::char::range('\u{e000}', '\u{ffff}'),
        1 => prop::char::range('\u{10000}', '\u{10ffff}'),
        1 => Just('\u{2028}'),
        1 => Just('😀'),
    ]
}

fn any_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any_char(), 0..8).prop_map(|cs| cs.into_iter().collect())
}

fn is_volatile(key: &str) -> bool {
    VOLATILE.contains(&key)
}

/// Keys that are never volatile, including near misses of volatile ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any_string(),
        1 => prop::sample::select(vec![
            "X", "Y", "W", "H", "Status", "xx", "x_", " x", "versions", "id", "nodes",
            "name", "ip", "created", "status_changed", "last_error_", "",
        ])
        .prop_map(str::to_owned),
    ]
    .prop_filter("volatile key", |k| !is_volatile(k))
}

fn int_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        "-?[1-9][0-9]{15,80}",
        Just("0".to_owned()),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        -1.0e6..1.0e6f64,
        prop::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            0.1,
            1e16,
            1e15,
            1e-4,
            1e-5,
            5e-324,
            1e22,
            0.5,
            1.5e300,
            9_999_999_999_999_998.0,
            660_761_396_011_790.0 + 0.25,
            f64::MAX,
            f64::MIN_POSITIVE,
        ]),
    ]
}

fn leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        int_text().prop_map(J::Int),
        float().prop_map(J::Float),
        any_string().prop_map(J::Str),
    ]
}

fn object_of(inner: impl Strategy<Value = J>) -> impl Strategy<Value = J> {
    prop::collection::btree_map(key(), inner, 0..6)
        .prop_map(|m: BTreeMap<String, J>| J::Obj(m.into_iter().collect()))
}

fn value() -> impl Strategy<Value = J> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            object_of(inner),
        ]
    })
}

/// A document: always an object at the top.
fn document() -> impl Strategy<Value = J> {
    object_of(value())
}

// ---------------------------------------------------------------------------
// Transformations

/// Adds volatile keys, with arbitrary values, to objects at every depth.
fn inject_volatile(j: &J, rng: &mut Rng) -> J {
    match j {
        J::Arr(items) => J::Arr(items.iter().map(|i| inject_volatile(i, rng)).collect()),
        J::Obj(entries) => {
            let mut out: Vec<(String, J)> = entries
                .iter()
                .map(|(k, v)| (k.clone(), inject_volatile(v, rng)))
                .collect();
            let mut names = VOLATILE.to_vec();
            rng.shuffle(&mut names);
            for name in names.into_iter().take(rng.below(4)) {
                let junk = junk_value(rng, 3);
                let at = rng.below(out.len() + 1);
                out.insert(at, (name.to_owned(), junk));
            }
            J::Obj(out)
        }
        leaf => leaf.clone(),
    }
}

/// Gives objects at every depth earlier duplicates of some of their keys,
/// with arbitrary values: the last occurrence of a key wins.
fn inject_duplicates(j: &J, rng: &mut Rng) -> J {
    match j {
        J::Arr(items) => J::Arr(items.iter().map(|i| inject_duplicates(i, rng)).collect()),
        J::Obj(entries) => {
            let mut out = Vec::new();
            for (key, value) in entries {
                for _ in 0..rng.below(3) {
                    // Anywhere before the entry that wins.
                    let at = rng.below(out.len() + 1);
                    out.insert(at, (key.clone(), junk_value(rng, 2)));
                }
                out.push((key.clone(), inject_duplicates(value, rng)));
            }
            J::Obj(out)
        }
        leaf => leaf.clone(),
    }
}

/// Some value, possibly nested and itself holding volatile and other keys.
fn junk_value(rng: &mut Rng, depth: usize) -> J {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => J::Null,
        1 => J::Bool(rng.chance(50)),
        2 => J::Int(format!("{}", rng.next())),
        3 => J::Float(f64::from_bits(rng.next() >> 2)),
        4 => J::Str("2026-01-01T00:00:00Z \u{e9}\u{1f600}".to_owned()),
        5 => J::Arr(
            (0..rng.below(3))
                .map(|_| junk_value(rng, depth - 1))
                .collect(),
        ),
        _ => J::Obj(vec![
            ("status".to_owned(), junk_value(rng, depth - 1)),
            ("inner".to_owned(), junk_value(rng, depth - 1)),
        ]),
    }
}

/// Counts the places [`mutate`] can change: every value and every key.
fn sites(j: &J) -> usize {
    1 + match j {
        J::Arr(items) => items.iter().map(sites).sum(),
        J::Obj(entries) => entries.iter().map(|(_, v)| 1 + sites(v)).sum(),
        _ => 0,
    }
}

/// Makes one change that alters the document's meaning at the `target`-th
/// site in pre-order (values first, then each entry's key and value).
/// Returns true once the change is made.
fn mutate(j: &mut J, target: &mut usize, rng: &mut Rng) -> bool {
    if *target == 0 {
        change_here(j, rng);
        return true;
    }
    *target -= 1;
    match j {
        J::Arr(items) => items.iter_mut().any(|item| mutate(item, target, rng)),
        J::Obj(entries) => {
            for i in 0..entries.len() {
                if *target == 0 {
                    // Rename this key to one that is neither volatile nor taken.
                    let mut name = format!("{}_", entries[i].0);
                    while entries.iter().any(|(k, _)| *k == name) {
                        name.push('_');
                    }
                    entries[i].0 = name;
                    return true;
                }
                *target -= 1;
                if mutate(&mut entries[i].1, target, rng) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn change_here(j: &mut J, rng: &mut Rng) {
    *j = match std::mem::replace(j, J::Null) {
        J::Null => J::Bool(false),
        J::Bool(b) => J::Bool(!b),
        J::Int(text) => {
            if text.trim_start_matches('-').bytes().all(|b| b == b'0') {
                J::Int("1".to_owned())
            } else {
                J::Int(format!("{text}7"))
            }
        }
        J::Float(f) => {
            let g = if f == 0.0 { 1.0 } else { f * 2.0 };
            J::Float(if g.is_finite() { g } else { f / 2.0 })
        }
        J::Str(s) => J::Str(format!("{s}\u{1f680}")),
        J::Arr(mut items) => {
            if !items.is_empty() && rng.chance(50) {
                items.remove(rng.below(items.len()));
            } else {
                items.insert(rng.below(items.len() + 1), J::Null);
            }
            J::Arr(items)
        }
        J::Obj(mut entries) => {
            if !entries.is_empty() && rng.chance(50) {
                entries.remove(rng.below(entries.len()));
            } else {
                let mut name = "added".to_owned();
                while entries.iter().any(|(k, _)| *k == name) {
                    name.push('_');
                }
                entries.push((name, J::Null));
            }
            J::Obj(entries)
        }
    };
}

fn hash(text: &str) -> String {
    canonical_hash_str(text).unwrap_or_else(|e| panic!("{e}\ninput: {text}"))
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn key_order_does_not_matter(doc in document(), seed in any::<u64>()) {
        let plain = to_json(&doc, &mut Style::plain());
        let mut style = Style { shuffle_keys: true, ..Style::with_seed(seed) };
        prop_assert_eq!(hash(&plain), hash(&to_json(&doc, &mut style)));
    }

    #[test]
    fn whitespace_does_not_matter(doc in document(), seed in any::<u64>()) {
        let plain = to_json(&doc, &mut Style::plain());
        let mut style = Style { whitespace: true, ..Style::with_seed(seed) };
        let spaced = to_json(&doc, &mut style);
        prop_assert_eq!(hash(&plain), hash(&spaced));
    }

    #[test]
    fn escaping_does_not_matter(doc in document(), seed in any::<u64>()) {
        let raw = to_json(&doc, &mut Style::plain());
        let ascii = to_json(&doc, &mut Style { escape: Escape::Ascii, ..Style::with_seed(seed) });
        let mixed = to_json(&doc, &mut Style { escape: Escape::Mixed, ..Style::with_seed(seed) });
        prop_assert!(ascii.is_ascii());
        let want = hash(&raw);
        prop_assert_eq!(&want, &hash(&ascii));
        prop_assert_eq!(&want, &hash(&mixed));
    }

    #[test]
    fn number_spelling_does_not_matter(doc in document(), seed in any::<u64>()) {
        let plain = to_json(&doc, &mut Style::plain());
        let mut style = Style { vary_numbers: true, ..Style::with_seed(seed) };
        prop_assert_eq!(hash(&plain), hash(&to_json(&doc, &mut style)));
    }

    #[test]
    fn all_presentation_changes_together(doc in document(), seed in any::<u64>()) {
        let plain = to_json(&doc, &mut Style::plain());
        let wild = to_json(&doc, &mut Style::wild(seed));
        let want = hash(&plain);
        prop_assert_eq!(&want, &hash(&wild));
        // The parsed-value entry point agrees with the text one.
        let value: serde_json::Value = serde_json::from_str(&wild).unwrap();
        prop_assert_eq!(&want, &canonical_hash(&value).unwrap());
        // The canonical form is printable ASCII, and is its own canonical form.
        let canon = canonical_json(&value).unwrap();
        prop_assert!(canon.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        prop_assert_eq!(&want, &hash(&canon));
        let reparsed: serde_json::Value = serde_json::from_str(&canon).unwrap();
        prop_assert_eq!(&canon, &canonical_json(&reparsed).unwrap());
    }

    #[test]
    fn volatile_keys_do_not_matter(doc in document(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let noisy = inject_volatile(&doc, &mut rng);
        let without = to_json(&doc, &mut Style::plain());
        let with = to_json(&noisy, &mut Style::wild(seed));
        // Adding volatile keys leaves the hash alone; so, read the other way
        // round, does removing them.
        prop_assert_eq!(hash(&without), hash(&with));
        let noisier = inject_volatile(&noisy, &mut rng);
        prop_assert_eq!(hash(&with), hash(&to_json(&noisier, &mut Style::plain())));
    }

    #[test]
    fn earlier_duplicate_keys_do_not_matter(doc in document(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let duplicated = inject_duplicates(&doc, &mut rng);
        let text = to_json(&duplicated, &mut Style::plain());
        prop_assert_eq!(hash(&to_json(&doc, &mut Style::plain())), hash(&text));
        // serde_json keeps the last duplicate too.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(hash(&text), canonical_hash(&value).unwrap());
    }

    #[test]
    fn any_other_change_changes_the_hash(doc in document(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut changed = doc.clone();
        let mut target = rng.below(sites(&doc));
        prop_assert!(mutate(&mut changed, &mut target, &mut rng), "no site mutated");
        let before = to_json(&doc, &mut Style::wild(seed));
        let after = to_json(&changed, &mut Style::wild(seed ^ 1));
        prop_assert_ne!(hash(&before), hash(&after), "{} vs {}", before, after);
        // Volatile keys around the change do not hide it.
        let noisy = to_json(&inject_volatile(&changed, &mut rng), &mut Style::plain());
        prop_assert_ne!(hash(&before), hash(&noisy));
    }
}
