//! Free loopback addresses for the nodes a test starts.
//!
//! A node binds its ports itself, after the test has chosen them, so a port must stay free in
//! between. Ports the kernel hands out on its own (`bind` to port 0, and the source port of
//! every outgoing connection, which these tests open by the thousand) come from its ephemeral
//! range, so a port chosen there and released can be taken by the test's own clients before
//! the node binds it. These ports are chosen below that range, where the kernel never picks
//! one: each test process counts through a block of its own (by process id, so two test
//! binaries running at once rarely share a block) and skips any port that is in use.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FIRST_PORT: u32 = 10_000;
/// Ports in each test process's block.
const BLOCK: u32 = 500;

/// `count` distinct loopback addresses whose ports were free a moment ago, below the
/// kernel's ephemeral range. Falls back to ports from the kernel (port 0) when that range
/// starts too low to leave a block below it.
pub fn free_addresses(count: usize) -> Vec<SocketAddr> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let blocks = ephemeral_start.saturating_sub(FIRST_PORT) / BLOCK;
    if blocks == 0 {
        return kernel_chosen(count);
    }
    let block_start = FIRST_PORT + (std::process::id() % blocks) * BLOCK;
    // Held until every port is chosen, so that none is chosen twice.
    let mut held = Vec::with_capacity(count);
    for _ in 0..BLOCK {
        if held.len() == count {
            break;
        }
        let port = block_start + NEXT.fetch_add(1, Ordering::Relaxed) % BLOCK;
        let port = u16::try_from(port).expect("ports chosen are below the ephemeral range");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    assert_eq!(held.len(), count, "fewer than {count} free ports in {block_start}..+{BLOCK}");
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
