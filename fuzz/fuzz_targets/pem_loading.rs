//! The certificate and key loading paths: `pki::fingerprint` (PEM or DER),
//! `pki::normalize_fingerprint`, and `Identity::from_bundle` on a bundle
//! whose three PEM parts come from the input.
//!
//! Input: one mode byte, then up to three parts (CA certificate, leaf
//! certificate, private key) separated by `SEPARATOR`. With an even mode the
//! parts are the PEM texts themselves; with an odd mode they are DER, and the
//! harness wraps them in PEM, so mutations reach the DER parsers instead of
//! breaking the base64.
#![no_main]

use std::path::Path;

use decnet_agent_client::pki::{self, Bundle};
use decnet_agent_client::{ErrorKind, Identity};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"\n====\n";
const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

fuzz_target!(|data: &[u8]| {
    // The whole input as one certificate, PEM or DER, and as a fingerprint.
    check_fingerprint(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_normalize(text);
    }

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parts = split3(rest);
    for part in parts {
        check_fingerprint(part);
        if let Ok(text) = std::str::from_utf8(part) {
            check_normalize(text);
        }
    }

    let [ca, cert, key] = if mode & 1 == 0 {
        // The bundle fields are Strings: the files are read as UTF-8 text.
        let (Ok(ca), Ok(cert), Ok(key)) = (
            std::str::from_utf8(parts[0]),
            std::str::from_utf8(parts[1]),
            std::str::from_utf8(parts[2]),
        ) else {
            return;
        };
        [ca.to_owned(), cert.to_owned(), key.to_owned()]
    } else {
        let label = KEY_LABELS[usize::from(mode >> 1) % KEY_LABELS.len()];
        [
            pem("CERTIFICATE", parts[0]),
            pem("CERTIFICATE", parts[1]),
            pem(label, parts[2]),
        ]
    };
    let bundle = Bundle {
        ca_cert_pem: ca,
        cert_pem: cert,
        key_pem: key,
        fingerprint: String::new(),
    };
    match Identity::from_bundle(&bundle, Path::new("/fuzz/bundle")) {
        Ok(identity) => {
            check_hex(identity.fingerprint());
            // The identity's fingerprint is the leaf certificate's, whether
            // computed from its PEM or from the DER the identity holds.
            let leaf =
                pki::fingerprint(bundle.cert_pem.as_bytes()).expect("a loaded leaf fingerprints");
            assert_eq!(identity.fingerprint(), leaf);
            assert_eq!(pki::fingerprint_der(identity.cert()), leaf);
            assert_eq!(
                pki::fingerprint(identity.cert()).ok().as_deref(),
                Some(leaf.as_str())
            );
            let ca_der: &[u8] = identity.ca_cert();
            assert_eq!(
                pki::fingerprint(ca_der).ok(),
                Some(pki::fingerprint_der(ca_der))
            );
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Pki, "{e:?}");
            let _ = e.to_string();
        }
    }
});

fn check_fingerprint(bytes: &[u8]) {
    match pki::fingerprint(bytes) {
        Ok(hex) => {
            check_hex(&hex);
            assert_eq!(normalize(&hex), hex);
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:?}");
            let _ = e.to_string();
        }
    }
}

fn check_normalize(text: &str) {
    if let Ok(hex) = pki::normalize_fingerprint(text) {
        check_hex(&hex);
        // Idempotent, and insensitive to case and `:` separators.
        assert_eq!(normalize(&hex), hex);
        assert_eq!(normalize(&hex.to_ascii_uppercase()), hex);
        let pairs: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
        assert_eq!(normalize(&pairs.join(":")), hex);
    }
}

fn normalize(text: &str) -> String {
    pki::normalize_fingerprint(text).expect("a normalised fingerprint renormalises")
}

fn check_hex(hex: &str) {
    assert_eq!(hex.len(), 64, "{hex:?}");
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{hex:?}"
    );
}

/// The input cut at the first two separators; missing parts are empty.
fn split3(mut data: &[u8]) -> [&[u8]; 3] {
    let mut parts: [&[u8]; 3] = [&[]; 3];
    for part in parts.iter_mut().take(2) {
        match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                *part = &data[..at];
                data = &data[at + SEPARATOR.len()..];
            }
            None => {
                *part = data;
                return parts;
            }
        }
    }
    parts[2] = data;
    parts
}

/// `der` as a PEM block with the given label, 64 base64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
