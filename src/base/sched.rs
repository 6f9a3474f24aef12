//! The scheduler's view of a thread: its nice value and, on Linux 6.12+, its slice.
//!
//! Why slices matter here: the kernel's fair scheduler (EEVDF) lets the task with the earliest
//! virtual deadline run, and a task's deadline is its slice away, scaled by its weight. With the
//! default slice (several milliseconds) a DNS thread that has been answering for a while can
//! wait milliseconds behind a lower-priority prober that woke up with a short slice (measured
//! with `perf sched latency` under `bench/extra.sh probing`: up to 2.3 ms). Threads that answer
//! queries ask for a short slice too, so that they are picked first and preempt on wakeup.

use std::time::Duration;

/// `struct sched_attr` of sched_setattr(2), SCHED_ATTR_SIZE_VER1.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// The calling thread's nice value (Linux: nice is per thread).
pub fn nice() -> i32 {
    // getpriority can return -1 as a value; errno tells an error apart, and 0 is the answer
    // then (the default).
    // SAFETY: no pointers; reads the calling thread's priority.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if n == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            n
        }
    }
}

/// Sets the calling thread to SCHED_OTHER at `nice` with a scheduler slice of `slice` (the
/// kernel clamps it to 0.1–100 ms). Where the kernel has no custom slices (before 6.12) or
/// refuses, only the nice value is set.
pub fn set_fair(nice: i32, slice: Duration) {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: both calls only change the calling thread's scheduling; `attr` outlives the call.
    unsafe {
        if libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
        }
    }
}

/// A thread that answers queries: its nice value as it is, and the short slice.
pub fn answering() {
    set_fair(nice(), SHORT_SLICE);
}

/// The slice of the threads that answer queries and of the prober (the kernel's smallest).
pub const SHORT_SLICE: Duration = Duration::from_micros(100);
