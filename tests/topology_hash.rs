//! The canonical topology hash against the reference worker's vectors, plus
//! its error cases and canonical-serialization spot checks.

use decnet_agent_client::topology::{
    canonical_hash, canonical_hash_str, canonical_json, MAX_DEPTH, MAX_INT_DIGITS,
};
use decnet_agent_client::{Error, ErrorKind};
use serde_json::Value;
use sha2::Digest;

const VECTORS: &str = include_str!("data/canonical_hash.jsonl");

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn every_reference_vector_matches() {
    let lines: Vec<&str> = VECTORS.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 200,
        "vector file looks truncated: {}",
        lines.len()
    );
    let mut passed = 0;
    let mut failures = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let vector: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("vector line {} is not JSON: {e}", n + 1));
        let obj = vector.as_object().expect("vector is an object");
        // Any field other than these would mean a kind of vector (such as an
        // expected rejection) this test does not know how to check.
        for key in obj.keys() {
            assert!(
                matches!(key.as_str(), "name" | "input" | "sha256"),
                "vector line {} has unexpected field {key:?}",
                n + 1
            );
        }
        let name = obj["name"].as_str().expect("name is a string");
        let input = obj["input"].as_str().expect("input is a string");
        let want = obj["sha256"].as_str().expect("sha256 is a string");
        assert!(is_hex64(want), "{name}: bad expected digest {want:?}");
        match canonical_hash_str(input) {
            Ok(got) if got == want => passed += 1,
            Ok(got) => failures.push(format!("{name}: got {got}, want {want}")),
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "failing vectors:\n{}",
        failures.join("\n")
    );
    assert_eq!(passed, lines.len());
    // Every line of the file is a vector: nothing was skipped as blank.
    assert_eq!(passed, VECTORS.lines().count());
}

#[test]
fn hash_of_parsed_value_matches_hash_of_text() {
    for line in VECTORS.lines() {
        let vector: Value = serde_json::from_str(line).unwrap();
        let input = vector["input"].as_str().unwrap();
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            canonical_hash(&value).unwrap(),
            vector["sha256"].as_str().unwrap(),
            "{}",
            vector["name"]
        );
    }
}

#[track_caller]
fn assert_invalid(result: Result<String, Error>, needle: &str) {
    match result {
        Ok(hash) => panic!("expected an invalid-argument error, got hash {hash}"),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            match &err {
                Error::InvalidArgument { argument, reason } => {
                    assert_eq!(argument, "hydrated");
                    assert!(
                        reason.contains(needle),
                        "reason {reason:?} does not mention {needle:?}"
                    );
                }
                other => panic!("unexpected error {other:?}"),
            }
        }
    }
}

#[test]
fn malformed_json_is_rejected() {
    for input in [
        "",
        " ",
        "{",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{} x",
        "{\"a\":'b'}",
        "{\"a\":NaN}",
        "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":01}",
        "{\"a\":+1}",
        "{\"a\":1.}",
        "{\"a\":\"raw\ncontrol\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\x41\"}",
        "\u{feff}{}",
    ] {
        assert_invalid(canonical_hash_str(input), "malformed JSON");
    }
}

#[test]
fn non_object_top_level_is_rejected() {
    for input in ["[]", "[{}]", "1", "1.5", "\"s\"", "null", "true", "false"] {
        assert_invalid(canonical_hash_str(input), "top level");
        let value: Value = serde_json::from_str(input).unwrap();
        assert_invalid(canonical_hash(&value), "top level");
        assert!(canonical_json(&value).is_err());
    }
}

#[test]
fn overflowing_float_is_rejected() {
    for input in [
        "{\"a\":1e400}",
        "{\"a\":-1e400}",
        "{\"a\":[1.8e308]}",
        "{\"a\":{\"b\":1E+99999999999999999999}}",
    ] {
        assert_invalid(canonical_hash_str(input), "overflows");
    }
    // Volatile keys are dropped before their values are looked at; the
    // worker, too, reads such a value as infinity and then drops it.
    assert_eq!(
        canonical_hash_str("{\"x\":1e400,\"a\":{\"status\":-1e400}}").unwrap(),
        canonical_hash_str("{\"a\":{}}").unwrap()
    );
}

#[test]
fn duplicate_keys_resolve_before_overflow_is_judged() {
    // The worker reads 1e400 as infinity and then replaces it.
    assert_eq!(
        canonical_hash_str("{\"a\":1e400,\"b\":0,\"a\":1}").unwrap(),
        canonical_hash_str("{\"a\":1,\"b\":0}").unwrap()
    );
    assert_invalid(
        canonical_hash_str("{\"a\":1,\"a\":{\"c\":[1e400]}}"),
        "overflows",
    );
    // Nested duplicates, out of order, three times over: the last one wins.
    assert_eq!(
        canon(
            "{\"z\":{\"k\":1,\"j\":2,\"k\":3,\"k\":[4]},\"a\":0,\"z\":{\"k\":5,\"j\":6,\"k\":7}}"
        ),
        "{\"a\":0,\"z\":{\"j\":6,\"k\":7}}"
    );
    assert_eq!(
        canonical_hash_str(
            "{\"z\":{\"k\":1,\"j\":2,\"k\":3},\"a\":0,\"z\":{\"k\":5,\"j\":6,\"k\":7}}"
        )
        .unwrap(),
        canonical_hash_str("{\"a\":0,\"z\":{\"j\":6,\"k\":7}}").unwrap()
    );
}

#[test]
fn unreadable_volatile_values_are_still_refused() {
    // Dropped values are not hashed, but the worker must still be able to
    // read them: integers over its digit limit and excessive nesting fail.
    let long_int = format!("{{\"a\":1,\"x\":{}}}", "9".repeat(MAX_INT_DIGITS + 1));
    assert_invalid(canonical_hash_str(&long_int), "digits");
    let value: Value = serde_json::from_str(&long_int).unwrap();
    assert_invalid(canonical_hash(&value), "digits");

    let deep = format!(
        "{{\"a\":1,\"status\":{}{}}}",
        "[".repeat(MAX_DEPTH),
        "]".repeat(MAX_DEPTH)
    );
    assert_invalid(canonical_hash_str(&deep), "nesting");
    let value: Value = serde_json::from_str(&deep).unwrap();
    assert_invalid(canonical_hash(&value), "nesting");
}

#[test]
fn underflowing_float_reads_as_zero() {
    let v: Value = serde_json::from_str("{\"a\":1e-400,\"b\":-1e-400}").unwrap();
    assert_eq!(canonical_json(&v).unwrap(), "{\"a\":0.0,\"b\":-0.0}");
}

#[test]
fn integer_digit_limit() {
    let ok = format!("{{\"a\":-{}}}", "7".repeat(MAX_INT_DIGITS));
    assert!(canonical_hash_str(&ok).is_ok());
    let too_long = format!("{{\"a\":{}}}", "7".repeat(MAX_INT_DIGITS + 1));
    assert_invalid(canonical_hash_str(&too_long), "digits");
}

/// `{"a":[[[…]]]}` with `depth` containers in all.
fn nested_text(depth: usize) -> String {
    let inner = depth - 1;
    format!("{{\"a\":{}{}}}", "[".repeat(inner), "]".repeat(inner))
}

#[test]
fn nesting_limit_in_text() {
    assert!(canonical_hash_str(&nested_text(MAX_DEPTH)).is_ok());
    assert_invalid(canonical_hash_str(&nested_text(MAX_DEPTH + 1)), "nesting");
    assert_invalid(canonical_hash_str(&nested_text(200)), "nesting");
    assert_invalid(canonical_hash_str(&nested_text(100_000)), "nesting");
    // Unbalanced and bare deep arrays too.
    assert!(canonical_hash_str(&"[".repeat(100_000)).is_err());
    let bare = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_invalid(canonical_hash_str(&bare), "nesting");
}

/// `{"a":[[[…]]]}` built in memory with `depth` containers in all.
fn nested_value(depth: usize) -> Value {
    let mut v = Value::Array(Vec::new());
    for _ in 2..depth {
        v = Value::Array(vec![v]);
    }
    let mut map = serde_json::Map::new();
    map.insert("a".to_owned(), v);
    Value::Object(map)
}

/// Drops a deeply nested value without recursing (serde_json's own drop
/// recurses and would overflow the test thread's stack).
fn dismantle(mut v: Value) {
    loop {
        v = match v {
            Value::Array(mut items) => match items.pop() {
                Some(child) => child,
                None => return,
            },
            Value::Object(map) => match map.into_iter().next() {
                Some((_, child)) => child,
                None => return,
            },
            _ => return,
        };
    }
}

#[test]
fn nesting_limit_in_values() {
    let ok = nested_value(MAX_DEPTH);
    assert!(canonical_hash(&ok).is_ok());
    assert!(canonical_json(&ok).is_ok());
    let deeper = nested_value(MAX_DEPTH + 1);
    assert_invalid(canonical_hash(&deeper), "nesting");
    let deep = nested_value(100_000);
    assert_invalid(canonical_hash(&deep), "nesting");
    assert!(canonical_json(&deep).is_err());
    dismantle(deep);
}

#[test]
fn nesting_limit_counts_objects_in_lists() {
    // Alternate objects and arrays: {"k":[{"k":[…]}]}
    let mut text = String::new();
    let mut close = String::new();
    for i in 0..MAX_DEPTH {
        if i % 2 == 0 {
            text.push_str("{\"k\":");
            close.insert(0, '}');
        } else {
            text.push('[');
            close.insert(0, ']');
        }
    }
    let ok = format!("{text}1{close}");
    assert!(canonical_hash_str(&ok).is_ok());
    let too_deep = format!("{text}[1]{close}");
    assert_invalid(canonical_hash_str(&too_deep), "nesting");
}

fn canon(text: &str) -> String {
    let value: Value = serde_json::from_str(text).unwrap();
    canonical_json(&value).unwrap()
}

#[test]
fn canonical_json_spot_checks() {
    assert_eq!(canon("{}"), "{}");
    assert_eq!(
        canon(" { \"b\" : 1 , \"a\" : [ 1 , 2 ] } "),
        "{\"a\":[1,2],\"b\":1}"
    );
    assert_eq!(
        canon(
            "{\"topology\":{\"id\":\"t\",\"updated_at\":\"x\",\"nodes\":[{\"id\":\"n1\",\
             \"x\":10,\"y\":20,\"w\":1,\"h\":2,\"last_seen\":null,\"kind\":\"decky\"}]},\
             \"last_error\":\"boom\",\"status\":{\"deep\":1},\"version\":3,\
             \"created_at\":0,\"status_changed_at\":0}"
        ),
        "{\"topology\":{\"id\":\"t\",\"nodes\":[{\"id\":\"n1\",\"kind\":\"decky\"}]}}"
    );
    // Keys that merely resemble volatile ones are kept.
    assert_eq!(
        canon("{\"X\":1,\"Status\":2,\"xy\":3,\"versions\":4}"),
        "{\"Status\":2,\"X\":1,\"versions\":4,\"xy\":3}"
    );
    // Escapes; `/` stays as it is, DEL and non-ASCII become \u escapes.
    assert_eq!(
        canon(r#"{"s":"q\" b\\ \n\r\t\b\f \u0001\u001f\u007f \/ é中😀 \u2028"}"#),
        r#"{"s":"q\" b\\ \n\r\t\b\f \u0001\u001f\u007f / \u00e9\u4e2d\ud83d\ude00 \u2028"}"#
    );
    // Keys sort by code point (not by UTF-16 unit): U+FFFD before U+1F600.
    assert_eq!(
        canon("{\"\u{1F600}\":1,\"\u{FFFD}\":2,\"a\":3,\"\":4,\"Z\":5}"),
        r#"{"":4,"Z":5,"a":3,"\ufffd":2,"\ud83d\ude00":1}"#
    );
    // Numbers.
    assert_eq!(
        canon(
            "{\"i\":[0,-0,-1,123456789012345678901234567890],\
             \"f\":[1.0,1.50,-0.0,0.0,1e0,1E2,10e-1,1e16,1e-5,2E-7,0.0001,\
             1e15,123456789012345680.0,1.7976931348623157e308,5e-324,0.1e1]}"
        ),
        "{\"f\":[1.0,1.5,-0.0,0.0,1.0,100.0,1.0,1e+16,1e-05,2e-07,0.0001,\
         1000000000000000.0,1.2345678901234568e+17,1.7976931348623157e+308,5e-324,1.0],\
         \"i\":[0,0,-1,123456789012345678901234567890]}"
    );
    assert_eq!(
        canon("{\"t\":true,\"f\":false,\"n\":null}"),
        "{\"f\":false,\"n\":null,\"t\":true}"
    );
    // Duplicate keys: the last one wins.
    assert_eq!(canon("{\"a\":1,\"b\":0,\"a\":2}"), "{\"a\":2,\"b\":0}");
}

#[test]
fn hash_is_sha256_of_canonical_json() {
    // SHA-256("{}"), computed independently.
    assert_eq!(
        canonical_hash_str("{}").unwrap(),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    // A serialization far longer than the hasher's internal chunk.
    let big: String = (0..20_000)
        .map(|i| format!("\"k{i}\":\"v\u{e9}{i}\""))
        .collect::<Vec<_>>()
        .join(",");
    let text = format!("{{{big}}}");
    let value: Value = serde_json::from_str(&text).unwrap();
    let json = canonical_json(&value).unwrap();
    assert!(json.len() > 100_000);
    let via_text = canonical_hash_str(&text).unwrap();
    assert_eq!(via_text, canonical_hash(&value).unwrap());
    let digest = sha2::Sha256::digest(json.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(via_text, hex);
    // Changing the last byte of the content changes the hash.
    let altered = text.replacen("\"v\u{e9}19999\"", "\"v\u{e9}19998\"", 1);
    assert_ne!(canonical_hash_str(&altered).unwrap(), via_text);
}
