//! JSON text read into `serde_json` values exactly as written.
//!
//! The crate enables serde_json's `arbitrary_precision` feature (the
//! canonical hash needs every number's exact literal). With it, serde_json
//! reads an object whose key is `$serde_json::private::Number` as a number,
//! or refuses it, where the worker, Python and every other reader see an
//! ordinary object. Text that may hold that key, written plainly or with
//! `\u` escapes, is therefore read here by a small parser that keeps every
//! object an object; everything else goes straight to serde_json.

use serde_json::{Map, Number, Value};

/// The key serde_json's `arbitrary_precision` reads as a number.
const NUMBER_TOKEN: &[u8] = b"$serde_json::private::Number";
/// Most arrays and objects nested in one another, exactly serde_json's own
/// limit: both paths of [`from_slice`] accept and refuse the same text.
pub const MAX_NESTING: usize = 127;

/// Parses JSON text into a [`Value`], keeping an object whose key is
/// `$serde_json::private::Number` an object. The error is a message for the
/// caller's own error kind.
pub fn from_slice(bytes: &[u8]) -> Result<Value, String> {
    if !may_hold_number_token(bytes) {
        return serde_json::from_slice(bytes).map_err(|e| e.to_string());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut parser = Parser { text, pos: 0 };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

/// [`from_slice`] for text.
pub fn from_str(text: &str) -> Result<Value, String> {
    from_slice(text.as_bytes())
}

/// Whether the key could be in `bytes`: written plainly, or escaped (any
/// escape needs a backslash).
fn may_hold_number_token(bytes: &[u8]) -> bool {
    bytes.contains(&b'\\') || bytes.windows(NUMBER_TOKEN.len()).any(|w| w == NUMBER_TOKEN)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() != Some(byte) {
            return Err(self.error(&format!("expected `{}`", byte as char)));
        }
        self.pos += 1;
        Ok(())
    }

    /// A value inside `depth` arrays and objects.
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        self.skip_ws();
        if matches!(self.peek(), Some(b'{' | b'[')) && depth >= MAX_NESTING {
            return Err(self.error("nesting too deep"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(self.error("invalid literal"));
        }
        self.pos += word.len();
        Ok(value)
    }

    /// A number's literal, checked and kept exactly by serde_json.
    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.pos += 1;
        }
        serde_json::from_str::<Number>(&self.text[start..self.pos])
            .map(Value::Number)
            .map_err(|_| self.error("invalid number"))
    }

    /// A string literal, its escapes decoded by serde_json.
    fn string(&mut self) -> Result<String, String> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut at = start + 1;
        loop {
            match bytes.get(at) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => at += 2,
                Some(_) => at += 1,
            }
        }
        self.pos = at + 1;
        serde_json::from_str::<String>(&self.text[start..self.pos])
            .map_err(|e| format!("invalid string at byte {start}: {e}"))
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// An object; a repeated key keeps its last value, as serde_json does.
    fn object(&mut self, depth: usize) -> Result<Value, String> {
        self.pos += 1;
        let mut members = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            members.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_token_key_stays_an_object_key() {
        for text in [
            r#"{"$serde_json::private::Number":"1"}"#,
            r#"{"a":{"\u0024serde_json::private::Number":"2.50"}}"#,
            r#"{"$serde_json::private::Number":true}"#,
            r#"{"x":[{"$serde_json::private::N\u0075mber":"1","b":2}]}"#,
        ] {
            let value = from_str(text).unwrap();
            let round_trip: serde_json::Value = value.clone();
            // Written back out, the key is still there, spelled in full.
            let written = round_trip.to_string();
            assert!(
                written.contains("\"$serde_json::private::Number\""),
                "{text} -> {written}"
            );
            assert!(value.is_object(), "{text}");
        }
        assert_eq!(
            from_str(r#"{"$serde_json::private::Number":"1"}"#).unwrap()
                ["$serde_json::private::Number"],
            Value::String("1".into())
        );
    }

    #[test]
    fn it_reads_what_serde_json_reads() {
        for text in [
            r#"{"a":1,"b":[true,false,null,-0.5e+3,"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"],"c":{}}"#,
            r#" [ 1 , 2 ] "#,
            r#""just\\a string""#,
            r#"{"dup":1,"dup":2}"#,
            r#"123456789012345678901234567890"#,
        ] {
            let ours = from_str(text).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn it_refuses_what_serde_json_refuses() {
        for text in [
            r#"{"a\\":}"#,
            r#"{"a\\":1,}"#,
            r#"["\\",]"#,
            r#"{"a\\" 1}"#,
            r#""\\"#,
            r#"{"\x":1}"#,
            r#"[1.]"#,
            r#"["\\"] x"#,
            r#"{"a\\":tru}"#,
        ] {
            assert!(from_str(text).is_err(), "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
        let deep = format!("[\"\\\\\",{}{}]", "[".repeat(200), "]".repeat(200));
        assert!(from_str(&deep).is_err());
    }

    /// One nesting limit on both paths (plain text, and text the exact
    /// parser reads), for arrays and objects: serde_json's.
    #[test]
    fn both_paths_share_one_nesting_limit() {
        let nest = |levels: usize, escaped: bool| {
            let mut text = String::from(if escaped { "\"\\u0041\"" } else { "1" });
            for level in 0..levels {
                text = if level % 2 == 0 {
                    format!("[{text}]")
                } else {
                    format!("{{\"k\":{text}}}")
                };
            }
            text
        };
        for escaped in [false, true] {
            for levels in [MAX_NESTING - 1, MAX_NESTING] {
                let text = nest(levels, escaped);
                assert!(
                    from_str(&text).is_ok(),
                    "{levels} levels, escaped {escaped}"
                );
                assert!(serde_json::from_str::<Value>(&text).is_ok(), "{levels}");
            }
            for levels in [MAX_NESTING + 1, MAX_NESTING + 2] {
                let text = nest(levels, escaped);
                assert!(
                    from_str(&text).is_err(),
                    "{levels} levels, escaped {escaped}"
                );
                assert!(serde_json::from_str::<Value>(&text).is_err(), "{levels}");
            }
        }
    }
}
