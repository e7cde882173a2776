//! Free loopback addresses for the nodes a test starts.
//!
//! A node binds its ports itself, after the test has chosen them, so a port must stay free in
//! between. Ports the kernel hands out on its own (`bind` to port 0, and the source port of
//! every outgoing connection, which these tests open by the thousand) come from its ephemeral
//! range, so a port chosen there and released can be taken by the test's own clients before
//! the node binds it. These ports are chosen just below that range, where the kernel never
//! picks one, and above the fixed ports the project's scripts use (`bench/compare-etcd.sh`:
//! up to 28003). Each test process walks the range from a random start, skipping any port in
//! use, so two test processes running at once rarely hand out the same port at the same time.

use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FIRST_PORT: u32 = 29_000;

/// `count` distinct loopback addresses whose ports were free a moment ago, below the
/// kernel's ephemeral range. Falls back to ports from the kernel (port 0) when that range
/// starts too low to leave room below it.
pub fn free_addresses(count: usize) -> Vec<SocketAddr> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let room = ephemeral_start.saturating_sub(FIRST_PORT);
    if room < 256 {
        return kernel_chosen(count);
    }
    let start = *START.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        (hasher.finish() % u64::from(room)) as u32
    });
    // Held until every port is chosen, so that none is chosen twice.
    let mut held = Vec::with_capacity(count);
    for _ in 0..room {
        if held.len() == count {
            break;
        }
        let port = FIRST_PORT + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % room;
        let port = u16::try_from(port).expect("ports chosen are below the ephemeral range");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), count, "fewer than {count} free ports in {FIRST_PORT}..+{room}");
    held.iter()
        .map(|listener| listener.local_addr().expect("a bound listener has an address"))
        .collect()
}

fn kernel_chosen(count: usize) -> Vec<SocketAddr> {
    let held: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a loopback port is free"))
        .collect();
    held.iter()
        .map(|listener| listener.local_addr().expect("a bound listener has an address"))
        .collect()
}
