//! Differential check of the canonical topology hash: the hand-written
//! streaming canonicaliser behind `canonical_hash_str` against the
//! `Value`-based `canonical_hash` / `canonical_json`.
#![no_main]

use decnet_agent_client::topology::{canonical_hash, canonical_hash_str, canonical_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// With `arbitrary_precision`, serde_json reads an object whose key is
/// `$serde_json::private::Number` as a number (or refuses it), so
/// `canonical_hash(&serde_json::from_str(text))` and
/// `canonical_hash_str(text)` disagree on such text by design: the text
/// path reads what the worker reads, and the library applies topologies
/// given as text verbatim (see `topology::canonical_hash` and
/// fuzz/regressions/canonical_hash/). The differential checks skip text
/// that may hold that key; everything else must agree.
const SERDE_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Whether `text` may hold serde_json's private number key, written plainly
/// or with escapes (a loose unescape: false positives only skip an input).
fn may_hold_serde_token(text: &str) -> bool {
    if !text.contains('$') && !text.contains("\\u") {
        return false;
    }
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        plain.push_str(&rest[..at]);
        let escape = &rest[at..];
        let decoded = escape
            .get(2..6)
            .filter(|_| escape[1..].starts_with('u'))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .and_then(char::from_u32);
        match decoded {
            Some(c) => {
                plain.push(c);
                rest = &escape[6..];
            }
            None => {
                let mut chars = escape[1..].chars();
                plain.extend(chars.next());
                rest = chars.as_str();
            }
        }
    }
    plain.push_str(rest);
    plain.contains(SERDE_NUMBER_TOKEN)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let streamed = canonical_hash_str(text);
    if let Ok(hash) = &streamed {
        check_hex(hash);
    }
    if may_hold_serde_token(text) {
        return;
    }

    // serde_json refuses nesting beyond 128 levels, so a value it returns is
    // shallow enough to drop without overflowing the stack.
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        // serde_json is at least as lenient as the worker's parser on every
        // input the hash accepts.
        assert!(
            streamed.is_err(),
            "canonical_hash_str accepted text serde_json refuses: {streamed:?}"
        );
        return;
    };
    let parsed = canonical_hash(&value);
    match (&streamed, &parsed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "canonical_hash_str and canonical_hash disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!("canonical_hash_str: {streamed:?}\ncanonical_hash: {parsed:?}"),
    }
    if let Err(e) = &parsed {
        assert_eq!(
            e.kind(),
            decnet_agent_client::ErrorKind::InvalidArgument,
            "{e:?}"
        );
    }

    // canonical_json is the text canonical_hash digests, and it is a fixed
    // point: canonicalising it again changes nothing.
    let json = canonical_json(&value);
    match (&json, &parsed) {
        (Ok(json), Ok(hash)) => {
            assert!(json.is_ascii(), "canonical JSON is not ASCII: {json:?}");
            let digest = Sha256::digest(json.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                &hex, hash,
                "canonical_json does not digest to canonical_hash"
            );
            let again = canonical_hash_str(json).expect("canonical JSON re-hashes");
            assert_eq!(&again, hash, "canonical JSON is not a fixed point: {json}");
            let reparsed: Value = serde_json::from_str(json).expect("canonical JSON parses");
            let json2 = canonical_json(&reparsed).expect("canonical JSON re-canonicalises");
            assert_eq!(&json2, json, "canonical JSON is not a fixed point");
        }
        (Err(_), Err(_)) => {}
        _ => panic!("canonical_json: {json:?}\ncanonical_hash: {parsed:?}"),
    }
});

fn check_hex(hash: &str) {
    assert_eq!(hash.len(), 64, "{hash:?}");
    assert!(
        hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{hash:?}"
    );
}
