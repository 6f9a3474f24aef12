//! The floor for `bench/`: meridian's own UDP loop (SO_REUSEPORT socket, recvmmsg/sendmmsg)
//! with no DNS work at all — every query comes back with QR set. meridian's CPU per query is
//! reported as a multiple of this.
//!
//! `cargo run --release --example reflector -- 127.0.0.1:5317`

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5317".into())
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("reflector: bad address: {e}");
            std::process::exit(1);
        }
    };
    let sock = match std::net::UdpSocket::bind(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reflector: cannot bind {addr}: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("reflector on {addr}");
    meridian::server::udp::run_batched(sock, Arc::new(AtomicBool::new(false)), || {
        |q: &[u8], _src: SocketAddr, out: &mut Vec<u8>| {
            if q.len() < 12 {
                return false;
            }
            out.clear();
            out.extend_from_slice(q);
            out[2] |= 0x80;
            true
        }
    });
}
