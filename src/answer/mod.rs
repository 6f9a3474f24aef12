//! The answer floor's one entry point for transports: [`respond`] runs the fast path
//! ([`crate::fast`]) and, for anything it does not take, the reference handler
//! ([`crate::dns`]), and returns whether there is a reply (in the caller's buffer) and the
//! query's [`QueryOutcome`]. The transport hands that outcome to the counters ([`count`]) and
//! to the query log ([`log::Tap::end`]); nothing is handed over behind its back (no
//! thread-local, no static). UDP (`server/udp.rs`), TCP (`server/tcp.rs`) and any new
//! transport (an AF_XDP path) call this same function; what stays theirs is what is
//! transport-specific: RRL and truncation counting for UDP, framing and limits for TCP.

pub mod count;
pub mod log;

use std::net::SocketAddr;

pub use crate::dns::QueryOutcome;
pub use crate::edns::Transport;
use crate::snapshot::Snapshot;
pub use count::count;

/// Answers one query that arrived over `transport` from `src`: the fast path, else the
/// reference. Returns `true` when `out` holds the reply to send (`out` is overwritten either
/// way; its capacity is reused, so the fast path allocates nothing), and the outcome, which
/// the caller counts ([`count`]) and may log. Not counting is what `explain` and `simulate`
/// want, so they call the reference directly.
///
/// Nothing to send: a packet that is not a query (too short, QR set, empty), a reply that
/// could not be encoded, or over TCP one longer than the 64 KiB the length prefix can say.
#[inline]
pub fn respond<'s>(
    snap: &'s Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> (bool, QueryOutcome<'s>) {
    if let Some(outcome) = crate::fast::try_answer(snap, packet, src, out, transport) {
        return (true, outcome);
    }
    reference_into(snap, packet, src, transport, out)
}

/// The reference half of [`respond`], out of line: the fast path's caller keeps its code small.
#[inline(never)]
fn reference_into<'s>(
    snap: &'s Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> (bool, QueryOutcome<'s>) {
    let (reply, outcome) = crate::dns::reference(snap, packet, src, transport, None);
    match reply {
        // A TCP answer is encoded within the 64 KiB the length prefix can say.
        Some(r) if transport == Transport::Udp || r.len() <= u16::MAX as usize => {
            out.clear();
            out.extend_from_slice(&r);
            (true, outcome)
        }
        _ => (false, outcome),
    }
}
