//! The canonical topology hash.
//!
//! A worker answers 400 to a topology apply whose `version_hash` differs from the hash
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
//! Duplicate object keys resolve as in the worker: the last one wins.
//!
//! # Rejected input
//!
//! Every function here returns [`Error::InvalidArgument`] (argument
//! `hydrated`) rather than a hash for input the worker could not hash the same
//! way, and never panics:
//!
//! * malformed JSON, including the `NaN` and `Infinity` literals and `\u`
//!   escapes of lone UTF-16 surrogates, which the worker's parser tolerates
//!   but a Rust string cannot hold;
//! * a top level that is not an object;
//! * nesting deeper than [`MAX_DEPTH`] anywhere, volatile values included;
//! * an integer with more than [`MAX_INT_DIGITS`] digits anywhere, volatile
//!   values included (the worker's parser refuses those too);
//! * a float that overflows to infinity, such as `1e400`, in the hashed part
//!   of the document. Under a volatile key, or in a duplicate key's value that
//!   a later one replaces, it is ignored, as in the worker.
//!
//! Floats that underflow are accepted and hash as the worker reads them
//! (`1e-400` as `0.0`, `-1e-400` as `-0.0`).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::hex::{lower_hex as hex_digest, DIGITS as HEX};

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
/// Deeper input, as text or as an already parsed value, is refused with an
/// invalid-argument error, so hashing never recurses without bound. The worker
/// itself accepts deeper documents (up to Python's recursion limit); real
/// topologies nest far less deeply than this.
pub const MAX_DEPTH: usize = 100;

/// The most decimal digits an integer may have, sign excluded: the default
/// integer conversion limit of the worker's Python runtime, beyond which the
/// worker cannot read the number.
pub const MAX_INT_DIGITS: usize = 4300;

/// The argument name reported in errors.
const ARGUMENT: &str = "hydrated";

/// Computes the canonical topology hash of a `hydrated` object given as JSON
/// text: 64 lowercase hexadecimal characters.
///
/// The text is canonicalized while it is parsed, without building a
/// [`serde_json::Value`].
///
/// # Errors
///
/// [`Error::InvalidArgument`] for malformed JSON, a top level that is not an
/// object, nesting deeper than [`MAX_DEPTH`], an integer longer than
/// [`MAX_INT_DIGITS`] digits or a hashed float overflowing to infinity.
pub fn canonical_hash_str(json: &str) -> Result<String> {
    let canonical = Parser::canonicalize(json)?;
    Ok(hex_digest(Sha256::digest(&canonical).as_slice()))
}

/// Computes the canonical topology hash of an already parsed `hydrated`
/// object: 64 lowercase hexadecimal characters.
///
/// When the text is at hand, prefer [`canonical_hash_str`]: serde_json (as
/// built here, with arbitrary precision) reads an object whose only key is
/// `$serde_json::private::Number` as a number, where the worker sees an
/// object — found by fuzzing the two paths against each other.
///
/// # Errors
///
/// [`Error::InvalidArgument`] when `value` is not an object, nests deeper than
/// [`MAX_DEPTH`], holds an integer longer than [`MAX_INT_DIGITS`] digits or a
/// hashed float overflowing to infinity.
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

fn invalid(reason: impl Into<String>) -> Error {
    Error::invalid(ARGUMENT, reason)
}

fn too_deep() -> Error {
    invalid(format!("nesting deeper than {MAX_DEPTH} levels"))
}

fn check_depth(depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        Err(too_deep())
    } else {
        Ok(())
    }
}

/// Whether `key` is one of [`VOLATILE_KEYS`].
fn is_volatile(key: &str) -> bool {
    matches!(
        key,
        "created_at"
            | "status_changed_at"
            | "updated_at"
            | "last_seen"
            | "status"
            | "version"
            | "last_error"
            | "x"
            | "y"
            | "w"
            | "h"
    )
}

/// Bytes that stand for themselves inside a canonical string: printable
/// ASCII other than `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

// ---------------------------------------------------------------------------
// Output

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
            buf: Vec::with_capacity(Self::CHUNK),
        }
    }

    fn finish(mut self) -> String {
        self.hasher.update(&self.buf);
        hex_digest(self.hasher.finalize().as_slice())
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

/// Writes a JSON string with every character outside printable ASCII escaped.
fn write_string(s: &str, out: &mut impl Sink) {
    out.put_byte(b'"');
    let bytes = s.as_bytes();
    // Start of the pending run of bytes that stand for themselves.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if PLAIN[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        out.put(&bytes[run..i]);
        if bytes[i] < 0x80 {
            put_char(char::from(bytes[i]), out);
            i += 1;
        } else {
            // `i` starts a multi-byte sequence: every byte before it was
            // consumed whole, so it is on a character boundary.
            match s.get(i..).and_then(|rest| rest.chars().next()) {
                Some(c) => {
                    put_char(c, out);
                    i += c.len_utf8();
                }
                None => {
                    put_char(char::REPLACEMENT_CHARACTER, out);
                    i += 1;
                }
            }
        }
        run = i;
    }
    out.put(&bytes[run..]);
    out.put_byte(b'"');
}

/// Writes one character of a string's contents in canonical form.
#[inline]
fn put_char(c: char, out: &mut impl Sink) {
    match c {
        '"' => out.put(b"\\\""),
        '\\' => out.put(b"\\\\"),
        '\n' => out.put(b"\\n"),
        '\r' => out.put(b"\\r"),
        '\t' => out.put(b"\\t"),
        '\u{8}' => out.put(b"\\b"),
        '\u{c}' => out.put(b"\\f"),
        ' '..='~' => out.put_byte(c as u8),
        _ => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                put_u_escape(*unit, out);
            }
        }
    }
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

/// Whether a JSON number's text denotes a float (as opposed to an integer).
fn is_float_text(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

fn overflow_error(text: &str) -> Error {
    invalid(format!("number {} overflows a double", abbreviate(text)))
}

fn int_too_long(digits: usize) -> Error {
    invalid(format!(
        "integer of {digits} digits exceeds the limit of {MAX_INT_DIGITS}"
    ))
}

/// At most the first 40 characters of a long number, for error messages.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// Writes a number: integers exactly, floats in Python `repr` form.
fn write_number(n: &Number, out: &mut impl Sink) -> Result<()> {
    // With `arbitrary_precision`, the number keeps its literal JSON text.
    let text = n.as_str();
    if is_float_text(text) {
        let f: f64 = text
            .parse()
            .map_err(|_| invalid(format!("unreadable number {}", abbreviate(text))))?;
        if !f.is_finite() {
            return Err(overflow_error(text));
        }
        write_float(f, out)
    } else {
        write_integer(text, out)
    }
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
        return Err(int_too_long(digits.len()));
    }
    // JSON forbids leading zeros, but a value built by other means may hold
    // them; the decimal value has none. `-0` is plain `0`.
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

// ---------------------------------------------------------------------------
// Parsed values

/// Checks the top level and writes the whole canonical document.
fn write_document(value: &Value, out: &mut impl Sink) -> Result<()> {
    if !value.is_object() {
        return Err(not_an_object(match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }));
    }
    write_value(value, 1, out)
}

fn not_an_object(kind: &str) -> Error {
    invalid(format!("the top level must be a JSON object, not {kind}"))
}

/// Writes one value; `depth` is the nesting level a container here has.
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
            // `String` orders by UTF-8 bytes, which is Unicode code point
            // order. serde_json's default map iterates in that order already;
            // sort anyway in case some crate turns on its `preserve_order`.
            let mut sorted = true;
            let mut previous: Option<&String> = None;
            for (key, item) in map {
                if is_volatile(key) {
                    check_dropped(item, depth + 1)?;
                }
                sorted = sorted && previous.is_none_or(|p| p < key);
                previous = Some(key);
            }
            let kept = map.iter().filter(|(key, _)| !is_volatile(key));
            if sorted {
                write_entries(kept, depth, out)?;
            } else {
                let mut entries: Vec<(&String, &Value)> = kept.collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_entries(entries.into_iter(), depth, out)?;
            }
        }
    }
    Ok(())
}

fn write_entries<'v>(
    entries: impl Iterator<Item = (&'v String, &'v Value)>,
    depth: usize,
    out: &mut impl Sink,
) -> Result<()> {
    out.put_byte(b'{');
    for (i, (key, item)) in entries.enumerate() {
        if i > 0 {
            out.put_byte(b',');
        }
        write_string(key, out);
        out.put_byte(b':');
        write_value(item, depth + 1, out)?;
    }
    out.put_byte(b'}');
    Ok(())
}

/// Checks a value under a volatile key, which is not hashed, for what the
/// worker could not read at all: nesting beyond [`MAX_DEPTH`] and integers
/// beyond [`MAX_INT_DIGITS`] digits.
fn check_dropped(value: &Value, depth: usize) -> Result<()> {
    match value {
        Value::Number(n) if !is_float_text(n.as_str()) => {
            let digits = n.as_str().trim_start_matches('-').len();
            if digits > MAX_INT_DIGITS {
                return Err(int_too_long(digits));
            }
        }
        Value::Array(items) => {
            check_depth(depth)?;
            for item in items {
                check_dropped(item, depth + 1)?;
            }
        }
        Value::Object(map) => {
            check_depth(depth)?;
            for item in map.values() {
                check_dropped(item, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// JSON text

/// Stands, in the text parser's output, for a float that overflowed. It can
/// never occur in canonical output, which is ASCII; if it is still there once
/// duplicate keys are resolved, the document is refused.
const OVERFLOW_MARK: u8 = 0xff;

/// One kept member of the object being parsed: its key and where its
/// canonical `"key":value` bytes lie in the output.
struct Entry<'a> {
    key: Cow<'a, str>,
    start: usize,
    end: usize,
}

/// A strict JSON parser (RFC 8259, as the worker's parser reads it) that
/// writes the canonical form as it goes.
///
/// Each object's members are written in document order; when their keys turn
/// out not to be sorted, or repeat, the object's bytes are rearranged once it
/// is complete. Recursion is bounded by [`MAX_DEPTH`].
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    /// Member lists of finished objects, reused by later ones.
    pool: Vec<Vec<Entry<'a>>>,
    /// Work space for rearranging an object's members.
    scratch: Vec<u8>,
    order: Vec<usize>,
    /// The first float literal that overflowed, for the error message.
    overflow: Option<(usize, usize)>,
}

impl<'a> Parser<'a> {
    /// Parses `text` and returns its canonical serialization.
    fn canonicalize(text: &'a str) -> Result<Vec<u8>> {
        let mut parser = Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            out: Vec::with_capacity(text.len()),
            pool: Vec::new(),
            scratch: Vec::new(),
            order: Vec::new(),
            overflow: None,
        };
        parser.document()?;
        Ok(parser.out)
    }

    fn document(&mut self) -> Result<()> {
        self.skip_ws();
        let first = self.peek();
        let is_object = first == Some(b'{');
        // Parse whatever is there, so malformed text is reported as such
        // before a valid non-object top level.
        self.value(1, is_object)?;
        self.skip_ws();
        if self.pos < self.bytes.len() {
            return Err(self.syntax("unexpected text after the document"));
        }
        if !is_object {
            return Err(not_an_object(match first {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                Some(b'n') => "null",
                _ => "a number",
            }));
        }
        if self.out.contains(&OVERFLOW_MARK) {
            let literal = self
                .overflow
                .and_then(|(start, end)| self.text.get(start..end))
                .unwrap_or("");
            return Err(overflow_error(literal));
        }
        Ok(())
    }

    /// An error about the text at the current position.
    fn syntax(&self, what: &str) -> Error {
        let before = self.bytes.get(..self.pos).unwrap_or(self.bytes);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = 1 + self
            .text
            .get(line_start..self.pos)
            .map_or(0, |s| s.chars().count());
        invalid(format!(
            "malformed JSON: {what} at line {line} column {column}"
        ))
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Parses one value at the current position (whitespace already
    /// skipped), writing its canonical form only when `emit` is set.
    fn value(&mut self, depth: usize, emit: bool) -> Result<()> {
        match self.peek() {
            Some(b'{') => self.object(depth, emit),
            Some(b'[') => self.array(depth, emit),
            Some(b'"') => {
                self.pos += 1;
                self.string(emit)
            }
            Some(b't') => self.literal(b"true", emit),
            Some(b'f') => self.literal(b"false", emit),
            Some(b'n') => self.literal(b"null", emit),
            Some(b'-' | b'0'..=b'9') => self.number(emit),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &[u8], emit: bool) -> Result<()> {
        let end = self.pos + word.len();
        if self.bytes.get(self.pos..end) != Some(word) {
            return Err(self.syntax("expected a value"));
        }
        self.pos = end;
        if emit {
            self.out.extend_from_slice(word);
        }
        Ok(())
    }

    fn skip_digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self, emit: bool) -> Result<()> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.syntax("invalid number")),
        };
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.skip_digits() == 0 {
                return Err(self.syntax("invalid number"));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.skip_digits() == 0 {
                return Err(self.syntax("invalid number"));
            }
            float = true;
        }
        let literal = self.text.get(start..self.pos).unwrap_or("");
        if float {
            if emit {
                let f: f64 = literal
                    .parse()
                    .map_err(|_| self.syntax("unreadable number"))?;
                if f.is_finite() {
                    write_float(f, &mut self.out)?;
                } else {
                    // Refused only if it survives duplicate-key resolution.
                    self.out.push(OVERFLOW_MARK);
                    self.overflow.get_or_insert((start, self.pos));
                }
            }
        } else {
            if int_digits > MAX_INT_DIGITS {
                return Err(int_too_long(int_digits));
            }
            if emit {
                if literal == "-0" {
                    self.out.push(b'0');
                } else {
                    self.out.extend_from_slice(literal.as_bytes());
                }
            }
        }
        Ok(())
    }

    fn array(&mut self, depth: usize, emit: bool) -> Result<()> {
        check_depth(depth)?;
        self.pos += 1;
        if emit {
            self.out.push(b'[');
        }
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                self.value(depth + 1, emit)?;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        if emit {
                            self.out.push(b',');
                        }
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.syntax("expected `,` or `]`")),
                }
                self.pos += 1;
            }
        }
        if emit {
            self.out.push(b']');
        }
        Ok(())
    }

    fn object(&mut self, depth: usize, emit: bool) -> Result<()> {
        check_depth(depth)?;
        self.pos += 1;
        let mut entries = self.pool.pop().unwrap_or_default();
        let result = self.members(depth, emit, &mut entries);
        entries.clear();
        self.pool.push(entries);
        result
    }

    fn members(&mut self, depth: usize, emit: bool, entries: &mut Vec<Entry<'a>>) -> Result<()> {
        if emit {
            self.out.push(b'{');
        }
        let body = self.out.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(self.syntax("expected a string key"));
                }
                self.pos += 1;
                let key = self.key()?;
                self.skip_ws();
                if self.peek() != Some(b':') {
                    return Err(self.syntax("expected `:`"));
                }
                self.pos += 1;
                self.skip_ws();
                if emit && !is_volatile(&key) {
                    if !entries.is_empty() {
                        self.out.push(b',');
                    }
                    let start = self.out.len();
                    write_string(&key, &mut self.out);
                    self.out.push(b':');
                    self.value(depth + 1, true)?;
                    entries.push(Entry {
                        key,
                        start,
                        end: self.out.len(),
                    });
                } else {
                    self.value(depth + 1, false)?;
                }
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.syntax("expected `,` or `}`")),
                }
            }
        }
        if emit {
            if !entries.windows(2).all(|pair| pair[0].key < pair[1].key) {
                self.rearrange(body, entries);
            }
            self.out.push(b'}');
        }
        Ok(())
    }

    /// Rewrites the members of the object whose body starts at `body` in key
    /// order, keeping only the last of repeated keys.
    fn rearrange(&mut self, body: usize, entries: &[Entry<'a>]) {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..entries.len());
        // A stable sort: repeated keys stay in document order.
        order.sort_by(|&a, &b| entries[a].key.cmp(&entries[b].key));
        self.scratch.clear();
        for (i, &index) in order.iter().enumerate() {
            let entry = &entries[index];
            let replaced = order
                .get(i + 1)
                .is_some_and(|&next| entries[next].key == entry.key);
            if replaced {
                continue;
            }
            if !self.scratch.is_empty() {
                self.scratch.push(b',');
            }
            self.scratch
                .extend_from_slice(&self.out[entry.start..entry.end]);
        }
        self.out.truncate(body);
        self.out.extend_from_slice(&self.scratch);
        self.order = order;
    }

    /// Parses a string's contents (after the opening quote), writing them in
    /// canonical form only when `emit` is set.
    fn string(&mut self, emit: bool) -> Result<()> {
        if emit {
            self.out.push(b'"');
        }
        let mut run = self.pos;
        loop {
            self.pos = scan(self.bytes, self.pos, |b| PLAIN[usize::from(b)]);
            if emit {
                self.out.extend_from_slice(&self.bytes[run..self.pos]);
            }
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.escape()?;
                    if emit {
                        put_char(c, &mut self.out);
                    }
                }
                Some(0x00..=0x1f) => {
                    return Err(self.syntax("control character in a string"));
                }
                Some(_) => {
                    let c = self.raw_char()?;
                    if emit {
                        put_char(c, &mut self.out);
                    }
                }
                None => return Err(self.syntax("unterminated string")),
            }
            run = self.pos;
        }
        if emit {
            self.out.push(b'"');
        }
        Ok(())
    }

    /// Parses an object key (after the opening quote) into its text,
    /// borrowed from the input when it holds no escapes.
    fn key(&mut self) -> Result<Cow<'a, str>> {
        let start = self.pos;
        self.pos = scan(self.bytes, self.pos, |b| {
            b != b'"' && b != b'\\' && b >= 0x20
        });
        let head = self
            .text
            .get(start..self.pos)
            .ok_or_else(|| Error::internal("key scan stopped inside a character"))?;
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return Ok(Cow::Borrowed(head));
        }
        let mut key = String::from(head);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(key));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    key.push(self.escape()?);
                }
                Some(0x00..=0x1f) => {
                    return Err(self.syntax("control character in a string"));
                }
                Some(_) => key.push(self.raw_char()?),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }

    /// Reads the character starting at the current position (not an escape).
    fn raw_char(&mut self) -> Result<char> {
        // The position only ever advances by whole characters, so it is on a
        // character boundary.
        let c = self
            .text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
            .ok_or_else(|| Error::internal("string scan stopped inside a character"))?;
        self.pos += c.len_utf8();
        Ok(c)
    }

    /// Parses an escape sequence (after the backslash).
    fn escape(&mut self) -> Result<char> {
        let Some(b) = self.peek() else {
            return Err(self.syntax("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xd800..=0xdbff => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.syntax("lone surrogate in a \\u escape"));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.syntax("lone surrogate in a \\u escape"));
                        }
                        let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                        char::from_u32(code).ok_or_else(|| self.syntax("invalid \\u escape"))?
                    }
                    0xdc00..=0xdfff => {
                        return Err(self.syntax("lone surrogate in a \\u escape"));
                    }
                    _ => char::from_u32(unit).ok_or_else(|| self.syntax("invalid \\u escape"))?,
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.syntax("invalid escape"));
            }
        })
    }

    /// Parses the four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u32> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.syntax("invalid \\u escape"))?;
            unit = unit * 16 + digit;
            self.pos += 1;
        }
        Ok(unit)
    }
}

/// The position of the first byte from `pos` on that fails `keep`, or the
/// end of `bytes`. (A local index keeps the loop in registers.)
#[inline]
fn scan(bytes: &[u8], mut pos: usize, keep: impl Fn(u8) -> bool) -> usize {
    while let Some(&b) = bytes.get(pos) {
        if !keep(b) {
            break;
        }
        pos += 1;
    }
    pos
}

// ---------------------------------------------------------------------------
// Floats

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
    if n_digits > 1 && is_halfway(f, n_digits) {
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

/// Whether the exact value of `f` lies exactly halfway between two decimals
/// of `n` significant digits, the only case where Rust's and Python's choice
/// of shortest digits can differ.
///
/// `f` is `m × 2^e` with `m` odd. Halfway means its exact decimal expansion
/// has `n + 1` significant digits, the last a 5. For `e < 0` that expansion is
/// `m × 5^-e` (shifted), which has more than 18 digits once `-e > 25`. For
/// `e >= 0` the value is `(10k + 5) × 10^e`, so `5^(e+1)` divides `m < 2^53`,
/// which needs `e <= 21`.
fn is_halfway(f: f64, n: usize) -> bool {
    let bits = f.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mut m, mut e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    if m == 0 {
        return false;
    }
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += zeros as i32;
    let mut exact: u128 = match e {
        0..=21 => u128::from(m) << e,
        -25..=-1 => u128::from(m) * 5u128.pow(e.unsigned_abs()),
        _ => return false,
    };
    while exact.is_multiple_of(10) {
        exact /= 10;
    }
    // Exactly `n + 1` digits: 10^n <= exact < 10^(n+1), with n + 1 <= 18.
    exact % 10 == 5 && n < 18 && 10u128.pow(n as u32) <= exact && exact < 10u128.pow(n as u32 + 1)
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
            (660761396011790.0 + 0.25, "660761396011790.2"),
            (2007186904184319.0 + 0.25, "2007186904184319.2"),
            (655774311965705.0 + 0.25, "655774311965705.2"),
            (0.375, "0.375"),
        ];
        for (f, want) in cases {
            assert_eq!(float_text(*f), *want, "formatting {f:e}");
        }
    }

    #[test]
    fn halfway_detection() {
        assert!(is_halfway(660761396011790.0 + 0.25, 16));
        assert!(is_halfway(0.125, 2));
        assert!(is_halfway(2.5, 1));
        assert!(!is_halfway(0.125, 3));
        assert!(!is_halfway(0.1, 1));
        assert!(!is_halfway(1.5, 2));
        assert!(!is_halfway(0.0, 1));
        assert!(!is_halfway(5e-324, 1));
        assert!(!is_halfway(f64::MAX, 17));
        assert!(!is_halfway(5e21, 1));
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
