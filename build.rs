//! Gives the shared library a versioned SONAME (`libdecnet_agent_client.so.<major>`),
//! so installed programs keep linking to an ABI-compatible release.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdecnet_agent_client.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
