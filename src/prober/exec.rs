//! `kind = "exec"` checks: a program run per endpoint, without a shell (the arguments are the
//! profile's `command` with `{address}` and `{port}` filled in, passed as they are), that passes
//! when it exits 0 within the profile's `timeout`. Its first line of output may be `load=N`,
//! which feeds `least-loaded` as an HTTP check's `X-Load` does.
//!
//! Bounded in every way a check program could misbehave: it runs in a process group of its
//! own, and at the timeout the whole group is killed (SIGKILL) and the program reaped, so a
//! hung check leaves neither a process nor a zombie behind; at most [`OUTPUT_LIMIT`] bytes of
//! its output are kept (the rest is read and dropped, so a chatty check does not block on a
//! full pipe); stdin is empty and stderr discarded.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::probe::{Outcome, Target};

/// Bytes of a check's standard output kept (only its first line is read).
pub const OUTPUT_LIMIT: usize = 4096;

/// A ready-made exec check of one endpoint.
#[derive(Debug)]
pub(super) struct ExecProbe {
    argv: Vec<String>,
    timeout: Duration,
}

impl ExecProbe {
    pub fn new(t: &Target) -> Result<ExecProbe, String> {
        if t.argv.is_empty() {
            return Err("the exec profile has no command".into());
        }
        Ok(ExecProbe {
            argv: t.argv.clone(),
            timeout: t.settings.timeout,
        })
    }

    /// The program path, for messages.
    fn program(&self) -> &str {
        &self.argv[0]
    }

    pub async fn run(&self) -> Outcome {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so that a timeout kills what it started too.
            .process_group(0)
            // Should this probe be dropped before it ends (the prober stopped), the program
            // does not outlive it.
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::fail("error", format!("cannot run {}: {e}", self.program())),
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        // Should this run be dropped half-way (a reload removed the target, the prober
        // stopped), what the check started is killed too; `kill_on_drop` covers only the
        // program, and tokio reaps it.
        let mut group = GroupGuard(pid);
        let mut stdout = child.stdout.take();
        let work = async {
            let mut kept = Vec::new();
            if let Some(out) = stdout.as_mut() {
                let mut buf = [0u8; 1024];
                loop {
                    match out.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                            kept.extend_from_slice(&buf[..n.min(room)]);
                        }
                    }
                }
            }
            (kept, child.wait().await)
        };
        let done = tokio::time::timeout(self.timeout, work).await;
        drop(stdout);
        if matches!(done, Ok((_, Ok(_)))) {
            // Exited and reaped: its pid (and so its group's id) may be reused from now on.
            group.0 = None;
        }
        match done {
            Ok((out, Ok(status))) if status.success() => Outcome::ok(Some(load_of(&out))),
            Ok((_, Ok(status))) => Outcome::fail(
                "exit",
                match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => "failed".into(),
                },
            ),
            Ok((_, Err(e))) => Outcome::fail("error", format!("waiting for the check: {e}")),
            Err(_) => {
                group.kill();
                // SIGKILL to the program itself (in case the group call failed) and wait:
                // reaped here, not left a zombie.
                let _ = child.kill().await;
                Outcome::fail(
                    "timeout",
                    format!("timeout after {:?}: the check was killed", self.timeout),
                )
            }
        }
    }
}

/// The process group a check leads (made by `process_group(0)`), killed when dropped while
/// the check has not been reaped.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals the process group `pid` leads; the
            // check is not reaped yet, so the id is still its own. No memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `load=N` on the first line of a check's output: `Some(N)`; anything else: no load.
fn load_of(out: &[u8]) -> Option<f64> {
    let first = out.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(first).ok()?.trim();
    let v: f64 = line.strip_prefix("load=")?.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_lines() {
        assert_eq!(load_of(b"load=0.25\nmore"), Some(0.25));
        assert_eq!(load_of(b"load= 3 \r\n"), Some(3.0));
        assert_eq!(load_of(b"ok\nload=3"), None);
        assert_eq!(load_of(b"load=nan"), None);
        assert_eq!(load_of(b""), None);
    }
}
