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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{DNSClass, Name, RecordType};

    use super::log::{Entry, LogHandle, QuerySink, Tap};
    use super::*;

    fn snapshot() -> (tempfile::TempDir, Snapshot) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
        std::fs::write(
            dir.path().join("zones/example.com.zone"),
            "@ 3600 IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ 3600 IN NS ns\n\
             ns 3600 IN A 192.0.2.53\n",
        )
        .expect("zone");
        std::fs::write(
            dir.path().join("meridian.toml"),
            "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n\
             [regions.eu-west]\nlocation = { lat = 53.35, lon = -6.26 }\n\
             [[service]]\nname = \"www.example.com\"\npolicy = \"round-robin\"\nttl = 30\n\
             endpoints = [{ region = \"eu-west\", address = \"192.0.2.10\" }]\n",
        )
        .expect("config");
        let snap = Snapshot::load(&dir.path().join("meridian.toml"))
            .unwrap_or_else(|p| panic!("config rejected: {p}"));
        (dir, snap)
    }

    fn query(name: &str, class: DNSClass) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_ascii(name).expect("name"), RecordType::A);
        q.set_query_class(class);
        m.add_query(q);
        m.to_vec().expect("encode")
    }

    /// A sink that keeps what it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<(&'static str, Option<String>)>>);

    impl QuerySink for Kept {
        fn submit(&self, e: Entry) {
            let service = e.service.map(|n| n.to_ascii());
            self.0.lock().unwrap().push((e.policy, service));
        }
        fn shutdown(&self, _: Duration) {}
    }

    /// Both paths hand their outcome back with the reply: the fast path's balanced answer and
    /// the reference's CHAOS refusal, and a short packet (nothing sent, counted as malformed).
    /// The log entry's policy and service come from that outcome, on whichever thread.
    #[test]
    fn the_outcome_comes_back_with_the_reply_and_feeds_the_log() {
        let (_dir, snap) = snapshot();
        let src: SocketAddr = "198.51.100.1:5353".parse().unwrap();
        let kept = Arc::new(Kept::default());
        let log = LogHandle {
            every: Arc::new(AtomicU32::new(1)),
            sink: kept.clone(),
        };
        let tap = Tap::new(&log, Transport::Udp, "127.0.0.1:53".parse().unwrap());
        let mut out = Vec::new();

        let p = query("www.example.com.", DNSClass::IN);
        let mut fast_out = Vec::new();
        assert_eq!(
            crate::fast::answer(&snap, &p, src, &mut fast_out),
            crate::fast::Fast::Answered
        );
        let begun = tap.begin().expect("every query is logged");
        let (send, o) = respond(&snap, &p, src, Transport::Udp, &mut out);
        assert!(send);
        assert_eq!(out, fast_out, "the fast path answered");
        assert_eq!(o.rcode, Some(ResponseCode::NoError));
        assert_eq!(
            o.service.map(|s| s.name.to_ascii()).as_deref(),
            Some("www.example.com.")
        );
        assert_eq!(&o.picks[..], &[0]);
        tap.end(begun, src, &p, send.then_some(&out[..]), &o);

        let p = query("version.bind.", DNSClass::CH);
        let begun = tap.begin().expect("every query is logged");
        let (send, o) = respond(&snap, &p, src, Transport::Udp, &mut out);
        assert!(send);
        assert_eq!(
            Some(out.clone()),
            crate::dns::handle(&snap, &p, src, Transport::Udp)
        );
        assert_eq!(o.rcode, Some(ResponseCode::NoError));
        assert!(o.zone.is_none() && o.service.is_none());
        tap.end(begun, src, &p, send.then_some(&out[..]), &o);

        let (send, o) = respond(&snap, &[1, 2, 3], src, Transport::Udp, &mut out);
        assert!(!send);
        assert!(o.rcode.is_none() && o.unreadable);

        assert_eq!(
            *kept.0.lock().unwrap(),
            vec![
                ("round-robin", Some("www.example.com.".to_string())),
                ("none", None)
            ]
        );
    }

    /// Counting an outcome adds to the zone's cell for its qtype, rcode and policy.
    #[test]
    fn count_adds_the_outcome_to_its_zone() {
        let (_dir, snap) = snapshot();
        let src: SocketAddr = "198.51.100.1:5353".parse().unwrap();
        let mut out = Vec::new();
        let p = query("ns.example.com.", DNSClass::IN);
        let cells = |snap: &Snapshot| -> u64 {
            snap.zones
                .zones
                .values()
                .flat_map(|z| z.stats.cells().map(|c| c.3).collect::<Vec<_>>())
                .sum()
        };
        let before = cells(&snap);
        let (_, o) = respond(&snap, &p, src, Transport::Tcp, &mut out);
        count(&o);
        count(&o);
        assert_eq!(cells(&snap) - before, 2);
    }
}
