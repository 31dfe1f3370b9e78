//! Loopback ports for the programs. Promises: a port handed out is free at
//! the time, never handed out twice by this process, and below the kernel's
//! ephemeral range (32768+), so neither another instance's `bind(0)` nor an
//! outgoing connection's source port can take it while its program is down
//! for a restart (or not started yet: an agent may be pointed at a control
//! plane that starts later).

use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

/// A loopback port nothing listens on (see the module's promise).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let random = RandomState::new();
    for attempt in 0u64.. {
        let port = 20_000 + (random.hash_one(attempt) % 12_000) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    unreachable!()
}

/// `127.0.0.1:<port>`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `127.0.0.1:<a free port>`.
pub fn free_loopback() -> SocketAddr {
    loopback(free_port())
}
