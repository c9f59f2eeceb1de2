//! The canonical topology hash.
//!
//! A worker answers 400 to a deploy whose `version_hash` differs from the hash
//! it computes over the `hydrated` topology object it received. This module
//! computes the same value, following the "Canonical topology hash" section of
//! the agent API specification:
//!
//! 1. Parse the JSON and drop, at every nesting level (inside lists too), the
//!    volatile object keys listed in [`VOLATILE_KEYS`].
//! 2. Serialize canonically: object keys sorted by Unicode code point, no
//!    whitespace (separators `,` and `:`), every character outside printable
//!    ASCII escaped (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, otherwise
//!    `\uXXXX` with lowercase hex and UTF-16 surrogate pairs beyond the BMP;
//!    `/` is not escaped), integers as their exact decimal value, floats in
//!    Python's `repr` form, `true`, `false` and `null` as themselves.
//! 3. Take the SHA-256 of the UTF-8 bytes, as lowercase hex.
//!
//! A JSON number is a float when its text holds `.`, `e` or `E` (as in the
//! reference worker, which is written in Python), otherwise an integer.
//!
//! # Rejected input
//!
//! Every function here returns [`Error::InvalidArgument`] (argument
//! `hydrated`) rather than a hash for input the worker could not hash the same
//! way, and never panics:
//!
//! * malformed JSON (including `NaN`/`Infinity` literals, raw control
//!   characters in strings, and `\u` escapes of lone UTF-16 surrogates, which
//!   a Rust string cannot hold);
//! * a top level that is not an object;
//! * nesting deeper than [`MAX_DEPTH`];
//! * a float literal that overflows to infinity, such as `1e400`;
//! * an integer literal with more than [`MAX_INT_DIGITS`] digits, which the
//!   worker's Python runtime refuses to convert.
//!
//! Float literals that underflow are accepted and hash as Python would read
//! them (`1e-400` as `0.0`, `-1e-400` as `-0.0`).

use std::fmt::Write as _;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The object keys dropped at every nesting level before hashing: timestamps,
/// status fields and layout coordinates that change without changing the
/// topology.
pub const VOLATILE_KEYS: [&str; 11] = [
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

/// The deepest nesting of objects and arrays accepted, counting the top-level
/// object as depth 1: `{"a":[{}]}` has depth 3.
///
/// Deeper input is refused with an invalid-argument error, both as text and as
/// an already parsed value, so hashing never recurses without bound. The
/// limit is below what the JSON parser itself tolerates (127), so it does not
/// depend on the parser's internals; real topologies nest far less deeply.
pub const MAX_DEPTH: usize = 100;

/// The most decimal digits an integer may have (sign excluded): the default
/// integer-to-text conversion limit of the worker's Python runtime, beyond
/// which the worker cannot read the number.
pub const MAX_INT_DIGITS: usize = 4300;

/// The argument name reported in errors.
const ARGUMENT: &str = "hydrated";

/// Computes the canonical topology hash of a `hydrated` object given as JSON
/// text: 64 lowercase hexadecimal characters.
///
/// Duplicate object keys are resolved as the worker does: the last one wins.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for malformed JSON, a top level that is not an
/// object, nesting deeper than [`MAX_DEPTH`], a float overflowing to infinity
/// or an integer longer than [`MAX_INT_DIGITS`] digits.
pub fn canonical_hash_str(json: &str) -> Result<String> {
    let value = parse(json)?;
    canonical_hash(&value)
}

/// Computes the canonical topology hash of an already parsed `hydrated`
/// object: 64 lowercase hexadecimal characters.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when `value` is not an object, nests deeper than
/// [`MAX_DEPTH`], holds a float overflowing to infinity or an integer longer
/// than [`MAX_INT_DIGITS`] digits.
pub fn canonical_hash(value: &Value) -> Result<String> {
    let mut sink = HashSink::new();
    write_document(value, &mut sink)?;
    Ok(sink.finish())
}

/// Returns the canonical serialization of an already parsed `hydrated`
/// object: the exact text whose SHA-256 [`canonical_hash`] returns. Useful for
/// debugging a hash mismatch.
///
/// # Errors
///
/// The same as [`canonical_hash`].
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = Vec::with_capacity(256);
    write_document(value, &mut out)?;
    // Everything written is ASCII, so this conversion cannot fail; report a
    // bug rather than panic should it ever do so.
    String::from_utf8(out).map_err(|_| Error::internal("canonical JSON is not UTF-8"))
}

/// Parses JSON text, mapping every failure to an invalid-argument error.
fn parse(json: &str) -> Result<Value> {
    serde_json::from_str(json).map_err(|e| {
        let text = e.to_string();
        if text.starts_with("recursion limit exceeded") {
            invalid(format!("nesting deeper than {MAX_DEPTH} levels"))
        } else {
            invalid(format!("malformed JSON: {text}"))
        }
    })
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::invalid(ARGUMENT, reason)
}

/// Where canonical bytes go: a buffer, or a hash computed on the fly.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_byte(&mut self, byte: u8) {
        self.put(&[byte]);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }
}

/// Feeds SHA-256 in large chunks, so the whole serialization is never held in
/// memory and the hasher is not called once per token.
struct HashSink {
    hasher: Sha256,
    buf: Vec<u8>,
}

impl HashSink {
    const CHUNK: usize = 32 * 1024;

    fn new() -> Self {
        HashSink {
            hasher: Sha256::new(),
            buf: Vec::with_capacity(Self::CHUNK + 64),
        }
    }

    fn finish(mut self) -> String {
        self.hasher.update(&self.buf);
        let digest = self.hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        hex
    }
}

impl Sink for HashSink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > Self::CHUNK {
            self.hasher.update(&self.buf);
            self.buf.clear();
            if bytes.len() > Self::CHUNK {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    #[inline]
    fn put_byte(&mut self, byte: u8) {
        if self.buf.len() >= Self::CHUNK {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        self.buf.push(byte);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_volatile(key: &str) -> bool {
    VOLATILE_KEYS.contains(&key)
}

/// Checks the top level and writes the whole canonical document.
fn write_document(value: &Value, out: &mut impl Sink) -> Result<()> {
    if !value.is_object() {
        return Err(invalid(format!(
            "the top level must be a JSON object, not {}",
            kind_name(value)
        )));
    }
    write_value(value, 1, out)
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes one value; `depth` is the nesting level a container here would have.
/// Recursion stops at [`MAX_DEPTH`], so the stack use is bounded.
fn write_value(value: &Value, depth: usize, out: &mut impl Sink) -> Result<()> {
    match value {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            check_depth(depth)?;
            out.put_byte(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put_byte(b',');
                }
                write_value(item, depth + 1, out)?;
            }
            out.put_byte(b']');
        }
        Value::Object(map) => {
            check_depth(depth)?;
            let mut entries: Vec<(&String, &Value)> =
                map.iter().filter(|(k, _)| !is_volatile(k)).collect();
            // `String` orders by UTF-8 bytes, which is Unicode code point
            // order. serde_json's default map already iterates in that order;
            // sort anyway in case a dependency turns on `preserve_order`.
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            out.put_byte(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.put_byte(b',');
                }
                write_string(key, out);
                out.put_byte(b':');
                write_value(item, depth + 1, out)?;
            }
            out.put_byte(b'}');
        }
    }
    Ok(())
}

fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        Err(invalid(format!("nesting deeper than {MAX_DEPTH} levels")))
    } else {
        Ok(())
    }
}

/// Writes a JSON string with every character outside printable ASCII escaped.
fn write_string(s: &str, out: &mut impl Sink) {
    let bytes = s.as_bytes();
    out.put_byte(b'"');
    // Start of the pending run of bytes that need no escaping.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.put(&bytes[run..i]);
        match b {
            b'"' => out.put(b"\\\""),
            b'\\' => out.put(b"\\\\"),
            b'\n' => out.put(b"\\n"),
            b'\r' => out.put(b"\\r"),
            b'\t' => out.put(b"\\t"),
            0x08 => out.put(b"\\b"),
            0x0c => out.put(b"\\f"),
            _ if b < 0x80 => put_u_escape(u16::from(b), out),
            _ => {
                // A multi-byte UTF-8 sequence starts here: `i` is on a char
                // boundary because every byte before it was consumed whole.
                let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    put_u_escape(*unit, out);
                }
                i += c.len_utf8();
                run = i;
                continue;
            }
        }
        i += 1;
        run = i;
    }
    out.put(&bytes[run..]);
    out.put_byte(b'"');
}

/// Writes `\uXXXX` with lowercase hex digits.
#[inline]
fn put_u_escape(unit: u16, out: &mut impl Sink) {
    let n = usize::from(unit);
    out.put(&[
        b'\\',
        b'u',
        HEX[(n >> 12) & 0xf],
        HEX[(n >> 8) & 0xf],
        HEX[(n >> 4) & 0xf],
        HEX[n & 0xf],
    ]);
}

/// Writes a number: integers exactly, floats in Python `repr` form.
fn write_number(n: &Number, out: &mut impl Sink) -> Result<()> {
    // With `arbitrary_precision`, the number keeps its literal JSON text.
    let text = n.as_str();
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        let f: f64 = text
            .parse()
            .map_err(|_| invalid(format!("unreadable number {text:?}")))?;
        if !f.is_finite() {
            return Err(invalid(format!(
                "number {} overflows a double",
                abbreviate(text)
            )));
        }
        write_float(f, out)?;
    } else {
        write_integer(text, out)?;
    }
    Ok(())
}

/// Writes an integer literal as its exact decimal value.
fn write_integer(text: &str, out: &mut impl Sink) -> Result<()> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("unreadable number {}", abbreviate(text))));
    }
    if digits.len() > MAX_INT_DIGITS {
        return Err(invalid(format!(
            "integer of {} digits exceeds the limit of {MAX_INT_DIGITS}",
            digits.len()
        )));
    }
    // JSON forbids leading zeros, but a parsed value built by other means
    // may hold them; the decimal value has none. `-0` is plain `0`.
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        out.put_byte(b'0');
    } else {
        if negative {
            out.put_byte(b'-');
        }
        out.put(significant.as_bytes());
    }
    Ok(())
}

/// At most the first 40 characters of a long number, for error messages.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A small fixed buffer for formatting a float without allocating.
struct FloatBuf {
    bytes: [u8; 40],
    len: usize,
}

impl FloatBuf {
    fn new() -> Self {
        FloatBuf {
            bytes: [0; 40],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for FloatBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes a finite float as Python's `repr` does: the shortest digits that
/// round-trip, positional when the decimal exponent is in `-4..16` (with `.0`
/// added to whole numbers), otherwise `d.ddde±XX` with at least two exponent
/// digits.
///
/// When two digit strings of the shortest length are equally close to the
/// float (for example `660761396011790.2` and `.3` for a value ending in
/// `.25`), Python picks the even last digit while Rust's shortest formatting
/// rounds up; Rust's fixed-precision formatting rounds half to even, so the
/// digits are redone at that precision and kept when they still round-trip.
fn write_float(f: f64, out: &mut impl Sink) -> Result<()> {
    let broken = || Error::internal(format!("cannot format float {f:e}"));
    // `{:e}` without a precision yields the shortest round-trip digits, as
    // `d.ddde<exp>` (for example `1.5e300`, `1e-5`, `-0e0`).
    let mut shortest = FloatBuf::new();
    write!(shortest, "{f:e}").map_err(|_| broken())?;
    let mantissa = shortest.as_str().split('e').next().unwrap_or("");
    let n_digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    if n_digits > 1 {
        let mut even = FloatBuf::new();
        write!(even, "{f:.prec$e}", prec = n_digits - 1).map_err(|_| broken())?;
        if even.as_str().parse::<f64>() == Ok(f) {
            write_float_parts(even.as_str(), out);
            return Ok(());
        }
    }
    write_float_parts(shortest.as_str(), out);
    Ok(())
}

/// Lays out Rust's shortest `{:e}` text in Python `repr` form.
fn write_float_parts(sci: &str, out: &mut impl Sink) {
    let (negative, unsigned) = match sci.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, sci),
    };
    let (mantissa, exp) = unsigned.split_once('e').unwrap_or((unsigned, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // The significant digits, without the decimal point: value is
    // 0.d1d2d3… × 10^(exp + 1).
    let mut digits = [0u8; 24];
    let mut n = 0;
    for b in mantissa.bytes().filter(u8::is_ascii_digit) {
        if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    // Python's digits never end in a zero (`1e+16`, not `1.0e+16`).
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = &digits[..n];

    if negative {
        out.put_byte(b'-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.put(digits);
                for _ in digits.len()..int_len {
                    out.put_byte(b'0');
                }
                out.put(b".0");
            } else {
                out.put(&digits[..int_len]);
                out.put_byte(b'.');
                out.put(&digits[int_len..]);
            }
        } else {
            out.put(b"0.");
            for _ in 0..(-exp - 1) {
                out.put_byte(b'0');
            }
            out.put(digits);
        }
    } else {
        out.put(&digits[..1]);
        if digits.len() > 1 {
            out.put_byte(b'.');
            out.put(&digits[1..]);
        }
        out.put_byte(b'e');
        out.put_byte(if exp < 0 { b'-' } else { b'+' });
        let magnitude = exp.unsigned_abs();
        if magnitude < 10 {
            out.put_byte(b'0');
        }
        let mut tmp = FloatBuf::new();
        if write!(tmp, "{magnitude}").is_ok() {
            out.put(tmp.as_str().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_text(f: f64) -> String {
        let mut out = Vec::new();
        write_float(f, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_follow_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (100000.0, "100000.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (2e-7, "2e-07"),
            (1e22, "1e+22"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.00012345, "0.00012345"),
            (660761396011790.25, "660761396011790.2"),
            (2007186904184319.25, "2007186904184319.2"),
            (655774311965705.25, "655774311965705.2"),
            (0.375, "0.375"),
        ];
        for (f, want) in cases {
            assert_eq!(float_text(*f), *want, "formatting {f:e}");
        }
    }

    #[test]
    fn integers_are_exact() {
        let mut out = Vec::new();
        write_integer("-0", &mut out).unwrap();
        out.push(b' ');
        write_integer("-000120", &mut out).unwrap();
        assert_eq!(out, b"0 -120");
        assert!(write_integer("1x", &mut Vec::new()).is_err());
    }
}
