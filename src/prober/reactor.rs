//! The prober's own epoll set for plain `http://` and `tcp://` probes ([`super::plain`]): one
//! epoll instance per prober, itself watched by tokio as one file descriptor, in which every
//! probe's socket is registered once, edge-triggered, for everything it will wait for
//! (connected, readable, closed). Closing the socket takes it out of the set: no
//! `EPOLL_CTL_DEL`, and no `getsockopt(SO_ERROR)` after a connect that succeeded (a failed one
//! shows as `EPOLLERR`, and its error comes with the first write). tokio's own registration
//! costs two `epoll_ctl` a probe and a slab entry with its wakers; at 10,000 probes a second
//! the kernel's share of the probe is the floor, and this is the part above it that goes.
//!
//! One task ([`Reactor::drive`], in the supervisor's set) waits for the epoll set to be readable and hands each
//! socket's events to the probe waiting on it (its [`Waker`]). Probes wait with
//! [`Reactor::wait`] after clearing the events they are about to act on, so an edge that
//! comes while they act is never lost.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use tokio::io::unix::AsyncFd;

use crate::base::epoll::{Epoll, ET, RDHUP};
pub(super) use crate::base::epoll::{IN, OUT};
/// Error or hang-up: whatever was waited for will not come.
pub(super) const ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// Events fetched by one `epoll_wait`.
const BATCH: usize = 256;

/// One socket in the set: the events seen and not yet taken, and who waits for them.
#[derive(Default)]
struct Entry {
    ready: u32,
    waker: Option<Waker>,
    /// Bumped at each reuse of the slot, so that an entry is never confused with the one
    /// before it.
    generation: u32,
    used: bool,
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    free: Vec<u32>,
}

pub(super) struct Reactor {
    ep: AsyncFd<Epoll>,
    table: Mutex<Table>,
}

/// A socket registered in a [`Reactor`]; dropping it closes the socket (and so takes it out of
/// the epoll set) and frees its slot.
pub(super) struct Registered {
    reactor: Arc<Reactor>,
    fd: OwnedFd,
    slot: u32,
}

impl Reactor {
    /// Makes the epoll set, watched by the current tokio runtime; [`Reactor::drive`] must run
    /// for its probes to make progress. `None` when epoll cannot be had (the prober then uses
    /// tokio's sockets).
    pub fn new() -> Option<Arc<Reactor>> {
        let ep = Epoll::new().ok()?;
        // SAFETY: the epoll descriptor stays open, and the same, until it is dropped with the
        // AsyncFd.
        let ep =
            unsafe { AsyncFd::register_with_interest(ep, tokio::io::Interest::READABLE) }.ok()?;
        Some(Arc::new(Reactor {
            ep,
            table: Mutex::new(Table::default()),
        }))
    }

    /// Hands out the set's events for as long as it runs (the supervisor runs it in its task
    /// set, so it stops with the prober).
    pub async fn drive(self: Arc<Reactor>) {
        loop {
            let mut guard = match self.ep.readable().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("prober: its epoll set failed: {e}");
                    return;
                }
            };
            loop {
                match self.dispatch() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("prober: epoll_wait failed: {e}");
                        return;
                    }
                }
            }
            guard.clear_ready();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `fd` for input, output and hang-up, edge-triggered.
    pub fn register(self: &Arc<Reactor>, fd: OwnedFd) -> io::Result<Registered> {
        let slot = {
            let mut t = self.lock();
            let slot = match t.free.pop() {
                Some(s) => s,
                None => {
                    t.entries.push(Entry::default());
                    (t.entries.len() - 1) as u32
                }
            };
            let e = &mut t.entries[slot as usize];
            e.used = true;
            e.ready = 0;
            e.waker = None;
            e.generation = e.generation.wrapping_add(1);
            (slot, e.generation)
        };
        let (slot, generation) = slot;
        let reg = Registered {
            reactor: self.clone(),
            fd,
            slot,
        };
        self.ep.get_ref().add(
            reg.fd.as_raw_fd(),
            IN | OUT | RDHUP | ET,
            (u64::from(generation) << 32) | u64::from(slot),
        )?;
        Ok(reg)
    }

    /// Hands the events of one batch to their entries; true when the batch was full (more
    /// may be waiting).
    fn dispatch(&self) -> io::Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        let n = match self.ep.get_ref().wait(&mut events, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut wake = Vec::with_capacity(n);
        {
            let mut t = self.lock();
            for ev in &events[..n] {
                let data = ev.u64;
                let (slot, generation) = (data as u32, (data >> 32) as u32);
                let Some(e) = t.entries.get_mut(slot as usize) else {
                    continue;
                };
                if !e.used || e.generation != generation {
                    continue;
                }
                // A peer's half-close reads as input (EOF).
                let mut got = ev.events;
                if got & RDHUP != 0 {
                    got |= IN;
                }
                e.ready |= got;
                if let Some(w) = e.waker.take() {
                    wake.push(w);
                }
            }
        }
        for w in wake {
            w.wake();
        }
        Ok(n == BATCH)
    }
}

impl AsFd for Registered {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Registered {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Takes the events in `mask` that came since they were last taken (0 when none).
    pub fn take(&self, mask: u32) -> u32 {
        let mut t = self.reactor.lock();
        let e = &mut t.entries[self.slot as usize];
        let got = e.ready & (mask | ERR);
        e.ready &= !mask;
        got
    }

    /// Waits until one of `mask` (or an error or hang-up) has come since it was last taken,
    /// and returns the events that came.
    pub async fn wait(&self, mask: u32) -> u32 {
        poll_fn(|cx| {
            let mut t = self.reactor.lock();
            let e = &mut t.entries[self.slot as usize];
            let got = e.ready & (mask | ERR);
            if got != 0 {
                return Poll::Ready(got);
            }
            match &e.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => e.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // The descriptor closes after this (the field's own drop), which removes it from the
        // epoll set; its slot is free from now on, and an event of it still queued is told
        // apart by the generation.
        let mut t = self.reactor.lock();
        if let Some(e) = t.entries.get_mut(self.slot as usize) {
            e.used = false;
            e.waker = None;
            e.ready = 0;
        }
        t.free.push(self.slot);
    }
}
