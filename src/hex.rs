//! Lowercase hexadecimal, for fingerprints and digests.

/// The hex digits, lowercase.
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex, two characters a byte.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
