//! The ground floor: small helpers every other floor may use and that import nothing of the
//! crate themselves: the clock as a number, cheap randomness, CIDR masks, the listeners'
//! heartbeats, the process counters (leaf atomics the exposition reads), the `file:line:col` [`Problem`](problem::Problem), the cookie secret, and the
//! wire reader for names and options.
//! See docs/architecture.md, "Floors".

pub mod clock;
pub mod counters;
pub mod epoll;
pub mod liveness;
pub mod net;
pub mod out;
pub mod problem;
pub mod random;
pub mod sched;
pub mod secret;
pub mod text;
pub mod wire;
