//! How meridian's threads ask the kernel to schedule them (Linux): every thread that answers
//! queries (UDP, TCP) asks for the short slice of `base::sched`, so that it preempts a prober
//! or anything else at its priority when a query wakes it, and the prober thread runs at
//! nice 10 with the same slice. Read back from `/proc/self/task/*/{comm,stat,sched}`.

mod common;

use common::*;

/// The slice `base::sched::SHORT_SLICE` asks for, in nanoseconds.
const SHORT_SLICE_NS: u64 = 100_000;

/// (thread id, name) of every thread of this process.
fn threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let tid = e
            .expect("task entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        let comm =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
        out.push((tid, comm.trim().to_string()));
    }
    out
}

/// The thread's `se.slice` in nanoseconds (kernels with custom slices show it).
fn slice_ns(tid: &str) -> Option<u64> {
    slice_in(&format!("/proc/self/task/{tid}/sched"))
}

fn slice_in(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with("se.slice"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// The thread's nice value: field 19 of its stat line, counted after the `(comm)`.
fn nice(tid: &str) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    after
        .split(' ')
        .nth(16)
        .and_then(|v| v.parse().ok())
        .expect("nice field")
}

/// Custom fair-scheduler slices arrived in Linux 6.12; before that the kernel takes the call
/// and ignores the slice.
fn kernel_has_custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 12) && slice_in("/proc/self/sched").is_some()
}

#[test]
fn answering_threads_ask_for_a_short_slice_and_the_prober_runs_behind_them() {
    let server = TestServer::start_with(&[], "udp_sockets = 2\ntcp_threads = 2\n", "");
    let prober =
        meridian::prober::spawn_thread(server.shared.clone(), Default::default()).expect("prober");
    let slices = kernel_has_custom_slices();
    if !slices {
        eprintln!(
            "!!! this kernel ({}) has no custom scheduler slices (Linux 6.12+): only nice values \
             are checked here",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        );
    }
    // The threads set themselves up as they start: give them a moment.
    let found = wait_until(std::time::Duration::from_secs(5), || {
        let t = threads();
        t.iter().filter(|(_, n)| n.starts_with("udp ")).count() >= 2
            && t.iter().filter(|(_, n)| n.starts_with("tcp #")).count() >= 2
            && t.iter().any(|(_, n)| n == "prober")
    });
    assert!(found, "threads: {:?}", threads());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut answering = 0;
    for (tid, name) in threads() {
        if name.starts_with("udp ") || name.starts_with("tcp #") {
            answering += 1;
            assert_eq!(nice(&tid), 0, "{name} keeps the process's nice value");
            if slices {
                assert_eq!(slice_ns(&tid), Some(SHORT_SLICE_NS), "{name}'s slice");
            }
        } else if name == "prober" {
            assert_eq!(nice(&tid), 10, "the prober runs at nice 10");
            if slices {
                assert_eq!(slice_ns(&tid), Some(SHORT_SLICE_NS), "the prober's slice");
            }
        }
    }
    assert!(
        answering >= 4,
        "two UDP and two TCP threads: {:?}",
        threads()
    );
    prober.shutdown();
}
