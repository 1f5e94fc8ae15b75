//! Ports for processes a test starts (etcd, the API server, llama.cpp's server), and ports
//! where nothing listens.
//!
//! Binding port 0, reading the number and closing the socket races: until the child binds
//! it, the kernel may hand the same port to any outgoing connection as its source port
//! (and the tests make thousands), and the child then fails with "address already in use".
//! Ports below the kernel's ephemeral range are never handed out that way, so they are
//! taken from there, each checked free by a bind, none twice in one test binary.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// The first port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port that no outgoing connection can take and no other test of this binary was given;
/// free when this returns.
pub fn unused_port() -> u16 {
    // Test binaries run one after another, but a child of an earlier one may linger for a
    // moment: each binary starts at its own offset.
    const LOWEST: u16 = 20_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = ephemeral_start().saturating_sub(LOWEST).max(1_000);
    let offset = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (offset.wrapping_add(step) % span);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {}", LOWEST + span);
}
