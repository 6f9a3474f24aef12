//! The standard `process_*` metrics (as the Go and Python Prometheus clients export them), read
//! from `/proc/self` at scrape time: nothing is kept or sampled in between. On a system
//! without `/proc` the families are simply left out.

use std::sync::OnceLock;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::single;

/// Fields of `/proc/self/stat` that we use (proc(5)).
#[derive(Debug, PartialEq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so field N is index N - 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        start_ticks: num(22)?,
        vsize_bytes: num(23)?,
        rss_pages: num(24)?,
    })
}

/// System boot time (Unix seconds), from the `btime` line of `/proc/stat`; it does not change
/// while we run.
fn boot_time() -> Option<u64> {
    static BOOT: OnceLock<Option<u64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The soft limit on open files, from `/proc/self/limits` ("Max open files  SOFT  HARD  files").
fn max_fds() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

/// Writes the `process_*` families that can be read here.
pub(super) fn encode(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s));
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    if let (Some(st), Some(hz)) = (&stat, ticks) {
        single(
            enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            ConstCounter::new((st.utime_ticks + st.stime_ticks) as f64 / hz as f64),
        )?;
        if let Some(boot) = boot_time() {
            single(
                enc,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                ConstGauge::new(boot as f64 + st.start_ticks as f64 / hz as f64),
            )?;
        }
    }
    if let Some(st) = &stat {
        if let Some(page) = page {
            single(
                enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                ConstGauge::new((st.rss_pages * page) as i64),
            )?;
        }
        single(
            enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            ConstGauge::new(st.vsize_bytes as i64),
        )?;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle being read is itself one of the entries; leave it out.
        let n = dir.count().saturating_sub(1);
        single(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            ConstGauge::new(n as i64),
        )?;
    }
    if let Some(max) = max_fds() {
        single(
            enc,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            ConstGauge::new(max as i64),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_strange_command_name() {
        let s = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                 123456 987654321 2500 18446744073709551615";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                utime_ticks: 250,
                stime_ticks: 50,
                start_ticks: 123456,
                vsize_bytes: 987654321,
                rss_pages: 2500,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_reads() {
        let st = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        assert!(st.rss_pages > 0);
        assert!(max_fds().unwrap() > 0);
        assert!(boot_time().unwrap() > 1_000_000_000);
    }
}
