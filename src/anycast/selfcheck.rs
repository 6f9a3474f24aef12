//! The self-check (SPEC "Anycast"): real DNS queries from this process to its own listeners,
//! through the kernel and the same UDP path clients use, plus the `require` test on service
//! health. Runs on the anycast thread with blocking sockets; nothing here touches the query path
//! beyond the queries themselves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::state::Check;
use crate::config::anycast::Require;
use crate::snapshot::Snapshot;

/// An answer later than this counts as a failure.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(500);

/// More zones than this are checked a window at a time, rotating, so a server with 100,000
/// zones does not send itself 100,000 queries per interval; every zone is still covered.
pub const ZONES_PER_CHECK: usize = 64;

/// Where a listener is reached from this host: a wildcard bind through loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let mut to = listen;
    if to.ip().is_unspecified() {
        to.set_ip(match to.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    to
}

/// Self-check state kept between runs: the rotation over zones and a query id counter.
#[derive(Debug, Default)]
pub struct SelfCheck {
    offset: usize,
    next_id: u16,
}

impl SelfCheck {
    /// One self-check: the SOA of each zone (or of a window of them) on each listen address,
    /// then `require`.
    pub fn run(&mut self, snap: &Snapshot, listen: &[SocketAddr], require: Require) -> Check {
        let mut origins: Vec<&Name> = snap.zones.zones.values().map(|z| &z.origin).collect();
        if origins.is_empty() {
            return Check::DnsFailed("no zone is loaded".into());
        }
        origins.sort();
        let origins: Vec<&Name> = if origins.len() > ZONES_PER_CHECK {
            let start = self.offset % origins.len();
            self.offset = (start + ZONES_PER_CHECK) % origins.len();
            origins
                .iter()
                .cycle()
                .skip(start)
                .take(ZONES_PER_CHECK)
                .copied()
                .collect()
        } else {
            origins
        };
        for &addr in listen {
            if let Err(e) = self.ask_all(target(addr), &origins) {
                return Check::DnsFailed(format!("{}: {e}", target(addr)));
            }
        }
        match services(snap, require) {
            Ok(()) => Check::Good,
            Err(e) => Check::ServicesFailed(e),
        }
    }

    /// Sends every query at once on one socket and waits for all answers, ANSWER_WITHIN in all.
    fn ask_all(&mut self, to: SocketAddr, origins: &[&Name]) -> Result<(), String> {
        let local: SocketAddr = match to {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(local).map_err(|e| format!("cannot open a socket: {e}"))?;
        sock.connect(to)
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut pending: HashMap<u16, &Name> = HashMap::new();
        for &origin in origins {
            self.next_id = self.next_id.wrapping_add(40503); // odd: visits every id
            let id = self.next_id;
            let mut m = Message::new(id, MessageType::Query, OpCode::Query);
            let mut q = Query::query(origin.clone(), RecordType::SOA);
            q.set_query_class(DNSClass::IN);
            m.add_query(q);
            let bytes = m
                .to_vec()
                .map_err(|e| format!("cannot encode a query: {e}"))?;
            sock.send(&bytes)
                .map_err(|e| format!("cannot send the SOA query for {origin}: {e}"))?;
            pending.insert(id, origin);
        }
        let deadline = Instant::now() + ANSWER_WITHIN;
        let mut buf = vec![0u8; 65535];
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A zero timeout would mean "block forever".
            let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(format!("no answer: {e}")),
            };
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                return Err("an answer did not parse".into());
            };
            let Some(origin) = pending.remove(&m.metadata.id) else {
                continue; // late answer to an earlier check
            };
            let soa = m
                .answers
                .iter()
                .any(|r| r.record_type() == RecordType::SOA && r.name == *origin);
            if m.metadata.response_code != ResponseCode::NoError
                || !m.metadata.authoritative
                || !soa
            {
                return Err(format!(
                    "SOA {origin}: {} {}",
                    m.metadata.response_code,
                    if m.metadata.authoritative {
                        "without the SOA"
                    } else {
                        "not authoritative"
                    }
                ));
            }
        }
        match pending.values().next() {
            None => Ok(()),
            Some(origin) => Err(format!(
                "SOA {origin}: no answer within {} ms ({} of {} unanswered)",
                ANSWER_WITHIN.as_millis(),
                pending.len(),
                origins.len()
            )),
        }
    }
}

/// `require` against the live endpoint states: a service counts when one of its endpoints is
/// healthy and not drained.
pub fn services(snap: &Snapshot, require: Require) -> Result<(), String> {
    let up = |s: &crate::policy::Service| s.endpoints.iter().any(|e| e.state.up());
    match require {
        Require::Dns => Ok(()),
        Require::AnyService => {
            if snap.services.iter().any(|s| up(s)) {
                Ok(())
            } else {
                Err("require = any-service: no service has a healthy, undrained endpoint".into())
            }
        }
        Require::EveryService => {
            let down: Vec<String> = snap
                .services
                .iter()
                .filter(|s| !up(s))
                .map(|s| crate::zone::stats::name_label(&s.name))
                .collect();
            if down.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "require = every-service: no healthy, undrained endpoint in {}",
                    down.join(", ")
                ))
            }
        }
    }
}
