//! `HostRecord::from_json` on arbitrary UTF-8, and `HostRecord::from_value`
//! on whatever serde_json parses: never panics, and an accepted record keeps
//! its invariants.
#![no_main]

use std::net::IpAddr;

use decnet_agent_client::HostRecord;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let from_text = HostRecord::from_json(text);
    if let Ok(record) = &from_text {
        check(record);
    }
    // serde_json limits nesting to 128, so dropping this value is safe.
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let from_value = HostRecord::from_value(&value);
        match (&from_text, &from_value) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "from_json and from_value disagree"),
            (Err(_), Err(_)) => {}
            _ => panic!("from_json {from_text:?} but from_value {from_value:?}"),
        }
        if let Ok(record) = &from_value {
            check(record);
        }
    } else {
        assert!(
            from_text.is_err(),
            "from_json accepted text serde_json refuses"
        );
    }
});

fn check(record: &HostRecord) {
    assert_ne!(record.port, 0, "port 0 must become the default port");

    if let Some(pin) = &record.pin {
        assert_eq!(pin.len(), 64, "pin {pin:?} is not 64 characters");
        assert!(
            pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "pin {pin:?} is not lowercase hex"
        );
        // Normalising a normalised pin is the identity.
        let again = decnet_agent_client::pki::normalize_fingerprint(pin).expect("pin renormalises");
        assert_eq!(&again, pin);
    }

    let address = &record.address;
    assert!(!address.is_empty(), "empty address accepted");
    assert!(
        !address.starts_with('['),
        "address {address:?} kept its brackets"
    );

    // The same address and port make the same record through `new`.
    let rebuilt = HostRecord::new(address, record.port).expect("accepted address re-accepted");
    assert_eq!(&rebuilt.address, address);
    assert_eq!(rebuilt.port, record.port);

    // `authority()` splits back into the address and the port.
    let authority = record.authority();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("authority {authority:?} has no port"));
    assert_eq!(port.parse::<u16>().ok(), Some(record.port), "{authority:?}");
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => {
            let inner = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or_else(|| panic!("IPv6 authority {authority:?} lacks brackets"));
            assert_eq!(inner.parse::<IpAddr>().ok(), Some(IpAddr::V6(ip)));
        }
        _ => {
            assert_eq!(host, address, "{authority:?}");
            assert!(!host.contains(':'), "{authority:?}");
        }
    }
    if let Ok(addr) = authority.parse::<std::net::SocketAddr>() {
        assert_eq!(addr.port(), record.port);
        assert_eq!(
            addr.ip().to_string().parse::<IpAddr>().ok(),
            address.parse().ok()
        );
    }

    // The client dials `https://<authority>`: that URL must parse back to
    // the same host and port.
    let url = format!("https://{authority}/health");
    let uri: ureq::http::Uri = url
        .parse()
        .unwrap_or_else(|e| panic!("URL {url:?} of an accepted record does not parse: {e}"));
    assert_eq!(uri.port_u16(), Some(record.port), "{url:?}");
    let uri_host = uri
        .host()
        .unwrap_or_else(|| panic!("URL {url:?} has no host"));
    let uri_host = uri_host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(uri_host);
    assert!(
        uri_host.eq_ignore_ascii_case(address),
        "{url:?} host {uri_host:?}"
    );

    // `AgentClient::new` turns the address into a TLS server name: an
    // accepted record must not fail there.
    assert!(
        rustls_server_name_ok(address),
        "address {address:?} accepted but not a TLS server name"
    );
}

fn rustls_server_name_ok(address: &str) -> bool {
    rustls_pki_types::ServerName::try_from(address).is_ok()
}
