//! `client::interpret_response(status, body)`: never panics; a 2xx success
//! is always a JSON object, a 2xx failure a protocol error, and any other
//! status `Error::HttpStatus` carrying that status and the body.
#![no_main]

use decnet_agent_client::client::interpret_response;
use decnet_agent_client::{Error, ErrorKind};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // First byte: how to read the status; then the status bytes; the rest
    // is the body. Most inputs get a realistic status, some any u16.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (status, body) = match (mode % 4, rest) {
        (0, [b, body @ ..]) => (200 + u16::from(*b) % 100, body),
        (1, [b, body @ ..]) => (400 + u16::from(*b) % 200, body),
        (2, [b, body @ ..]) => (100 + u16::from(*b) * 2, body),
        (_, [hi, lo, body @ ..]) => (u16::from_be_bytes([*hi, *lo]), body),
        _ => return,
    };

    let result = interpret_response(status, body);
    // serde_json limits nesting to 128, so dropping this value is safe.
    let parsed = serde_json::from_slice::<Value>(body).ok();

    if (200..300).contains(&status) {
        match &result {
            Ok(value) => {
                assert!(value.is_object(), "2xx Ok is not an object: {value:?}");
                assert_eq!(Some(value), parsed.as_ref(), "Ok value is not the body");
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Protocol, "2xx error {e:?}");
                assert!(
                    !matches!(parsed, Some(Value::Object(_))),
                    "a JSON object body was refused: {e:?}"
                );
            }
        }
    } else {
        match &result {
            Err(Error::HttpStatus {
                status: got,
                body: text,
                detail,
            }) => {
                assert_eq!(*got, status, "HttpStatus carries the wrong status");
                assert_eq!(
                    text,
                    &String::from_utf8_lossy(body),
                    "HttpStatus body is not the lossy UTF-8 body"
                );
                let expected = parsed
                    .as_ref()
                    .and_then(|v| v.get("detail"))
                    .map(|d| match d {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                assert_eq!(detail, &expected, "detail mismatch");
            }
            other => panic!("non-2xx status {status} gave {other:?}"),
        }
    }

    // Rendering the result never panics either.
    if let Err(e) = &result {
        let message = e.to_string();
        assert!(!message.is_empty());
        assert!(ErrorKind::from_code(e.kind().code()) == Some(e.kind()));
    }
});
