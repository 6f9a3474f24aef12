//! The connection table shared by every TCP thread: `tcp_max_connections` in all,
//! `tcp_max_per_client` per client, and at the global limit the idlest connection told to go
//! (the rules are in [`super`]'s documentation).
//!
//! One mutex over a small map, taken when a connection opens, after each batch of answers and
//! when it closes: a few tens of nanoseconds against the tens of microseconds the kernel spends
//! on a connection, and uncontended but for the moment two threads accept at once. An evicted
//! connection belongs to another thread's loop, so eviction is a message to that thread (its
//! [`Inbox`]) rather than a close from here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::sys::EventFd;

/// Where a TCP thread hears that it must close connections: the slot ids of connections other
/// threads evicted, and the stop. Writing to it wakes the thread's `epoll_wait`.
pub(crate) struct Inbox {
    pub(crate) wake: EventFd,
    evicted: Mutex<Vec<u64>>,
}

impl Inbox {
    pub(crate) fn new() -> std::io::Result<Arc<Inbox>> {
        Ok(Arc::new(Inbox {
            wake: EventFd::new()?,
            evicted: Mutex::new(Vec::new()),
        }))
    }

    fn evict(&self, id: u64) {
        self.evicted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        self.wake.wake();
    }

    /// The slot ids this thread must close now.
    pub(crate) fn take_evicted(&self) -> Vec<u64> {
        std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub(crate) struct Slots {
    max_total: usize,
    max_per_client: usize,
    /// Origin of the `idle_since` clocks.
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// Every connection whose socket is open, evicted ones included.
    open: HashMap<u64, Entry>,
    /// Open connections by [`client_key`].
    per_client: HashMap<IpAddr, usize>,
}

struct Entry {
    client: IpAddr,
    /// Nanoseconds since [`Slots::epoch`] when the connection last sent answers (or opened).
    idle_since: u64,
    /// The thread whose loop holds the connection.
    owner: Arc<Inbox>,
    /// Told to close; still counted until it has.
    evicted: bool,
}

/// Why a connection was not given a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    PerClient,
    /// At the global limit: a connection was told to close (or all are closing already); ask
    /// again once it has.
    Full,
}

/// What a client is counted as for `tcp_max_per_client`: an IPv4 address (also when written
/// IPv4-mapped), or an IPv6 /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A held slot; dropping it frees the slot. The socket must be closed first.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    pub(crate) id: u64,
}

impl Slots {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    /// Nanoseconds since the table was made: fine enough that connections answered one
    /// after another never tie (with milliseconds they did, and the pick among ties was the
    /// hash map's order, not the oldest).
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table is consistent after every statement; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `ip`, held by the thread of `owner`. At the global limit
    /// it tells the idlest connection's thread to close it (unless one is closing already) and
    /// answers [`Refused::Full`]: the slot is free only once that connection's socket is closed.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, owner: &Arc<Inbox>) -> Result<Slot, Refused> {
        let client = client_key(ip);
        let mut t = self.lock();
        if t.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        if t.open.len() >= self.max_total {
            // One connection closing per newcomer waiting is enough; O(connections), but
            // only at the limit, and a few µs for the default 1024.
            if t.open.values().all(|e| !e.evicted) {
                let victim = t
                    .open
                    .iter()
                    .min_by_key(|(id, e)| (e.idle_since, **id))
                    .map(|(id, _)| *id);
                if let Some((id, e)) = victim.and_then(|id| Some(id).zip(t.open.get_mut(&id))) {
                    e.evicted = true;
                    e.owner.evict(id);
                }
            }
            return Err(Refused::Full);
        }
        let id = t.next_id;
        t.next_id += 1;
        let idle_since = self.now();
        t.open.insert(
            id,
            Entry {
                client,
                idle_since,
                owner: owner.clone(),
                evicted: false,
            },
        );
        *t.per_client.entry(client).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            id,
        })
    }

    /// Connections holding a slot now (evicted ones not yet closed included).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

impl Slot {
    /// The connection starts waiting for its next query now.
    pub(crate) fn touch(&self) {
        let now = self.slots.now();
        if let Some(e) = self.slots.lock().open.get_mut(&self.id) {
            e.idle_since = now;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        if let Some(e) = t.open.remove(&self.id) {
            if let Some(n) = t.per_client.get_mut(&e.client) {
                *n -= 1;
                if *n == 0 {
                    t.per_client.remove(&e.client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_client_limit_refuses_the_newcomer() {
        let inbox = Inbox::new().unwrap();
        let slots = Slots::new(100, 2);
        let a = slots.admit(ip("127.0.0.1"), &inbox).unwrap();
        let _b = slots.admit(ip("127.0.0.1"), &inbox).unwrap();
        assert_eq!(
            slots.admit(ip("127.0.0.1"), &inbox).err(),
            Some(Refused::PerClient)
        );
        assert!(slots.admit(ip("127.0.0.2"), &inbox).is_ok());
        drop(a);
        assert!(slots.admit(ip("127.0.0.1"), &inbox).is_ok());
    }

    #[test]
    fn global_limit_evicts_the_idlest_through_its_thread_and_counts_it_until_closed() {
        let (one, two) = (Inbox::new().unwrap(), Inbox::new().unwrap());
        let slots = Slots::new(2, 10);
        let old = slots.admit(ip("127.0.0.1"), &one).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let busy = slots.admit(ip("127.0.0.2"), &two).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        old.touch(); // `old` just answered: now `busy` has waited longest
        assert_eq!(
            slots.admit(ip("127.0.0.3"), &one).err(),
            Some(Refused::Full)
        );
        // The thread holding `busy` is told, not the one that asked.
        assert_eq!(two.take_evicted(), vec![busy.id]);
        assert!(one.take_evicted().is_empty());
        assert_eq!(
            slots.open(),
            2,
            "an evicted connection counts until it is closed"
        );
        assert_eq!(slots.lock().per_client.get(&ip("127.0.0.2")), Some(&1));
        // Asking again evicts no one else: one is already closing.
        assert_eq!(
            slots.admit(ip("127.0.0.4"), &one).err(),
            Some(Refused::Full)
        );
        assert!(one.take_evicted().is_empty() && two.take_evicted().is_empty());
        // The slot is free once the evicted connection has closed.
        drop(busy);
        let _new = slots
            .admit(ip("127.0.0.3"), &one)
            .expect("admitted once the slot was freed");
        assert_eq!(slots.open(), 2);
        assert_eq!(slots.lock().per_client.get(&ip("127.0.0.2")), None);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let inbox = Inbox::new().unwrap();
        let slots = Slots::new(100, 2);
        let _a = slots.admit(ip("2001:db8:0:1::1"), &inbox).unwrap();
        let _b = slots.admit(ip("2001:db8:0:1:ffff::2"), &inbox).unwrap();
        assert_eq!(
            slots
                .admit(ip("2001:db8:0:1:1234:5678:9abc:def0"), &inbox)
                .err(),
            Some(Refused::PerClient),
            "a third address of the same /64"
        );
        assert!(
            slots.admit(ip("2001:db8:0:2::1"), &inbox).is_ok(),
            "another /64"
        );
        // IPv4-mapped addresses count as the IPv4 address they carry.
        let _c = slots.admit(ip("192.0.2.1"), &inbox).unwrap();
        let _d = slots.admit(ip("::ffff:192.0.2.1"), &inbox).unwrap();
        assert_eq!(
            slots.admit(ip("192.0.2.1"), &inbox).err(),
            Some(Refused::PerClient)
        );
    }
}
