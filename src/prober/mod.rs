//! The health prober: a control loop that follows the snapshot and writes the health state
//! (`crate::health`) the query path reads. By concern: [`probe`] (what a probe of a target
//! is), [`schedule`] (when probes go out; [`start`] runs the prober on the current tokio
//! runtime and follows reloads by itself), `verdict` (rise/fall and what a result writes),
//! `http` (HTTP probes: hyper for https and names), `plain` and `reactor` (plain
//! http and tcp probes of an address on the prober's own epoll set), `tcp` (connects through
//! tokio), `tls` (rustls settings), `exec` (check programs) and [`budget`] (the CPU budget that stretches intervals,
//! and the cores the prober thread is kept on). `push` profiles have no probe: their states come
//! from the admin API, and the prober only expires them (`schedule`).
//!
//! It sits on the control floor, above `snapshot` and `health`, because it reads the current
//! snapshot (`SharedSnapshot`); `health` keeps only the state, so the model floor imports
//! nothing above it.

pub mod budget;
mod exec;
mod http;
mod plain;
pub mod probe;
mod reactor;
pub mod schedule;
mod tcp;
mod tls;
mod verdict;

pub use budget::{Meter, Reading};
pub use schedule::{
    spawn_thread, start, start_with, ProbeEvent, ProberHandle, ProberOptions, ProberThread,
};

/// What the probe tests' HTTP servers share.
#[cfg(test)]
mod test_server {
    use std::io::Read;

    /// Reads a request head (through its blank line) from an accepted connection.
    pub fn read_head(c: &mut std::net::TcpStream) -> Vec<u8> {
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("read timeout");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).expect("read the request");
            assert!(n > 0, "closed before the request's end");
            head.extend_from_slice(&buf[..n]);
        }
        head
    }
}
