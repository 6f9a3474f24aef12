//! The real `meridian` binary (or a helper such as etcd) as a child process
//! ([`ServerProcess`]), its config folder, and free loopback ports.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------------------------
// The real binary as a process

/// A loopback port free for both UDP and TCP right now (DNS listens on both).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port");
}

/// Writes `zones` ((file name, text) pairs) into `dir/zones/` and `config` into
/// `dir/meridian.toml`; returns the config's path.
pub fn write_config_dir(dir: &Path, zones: &[(&str, &str)], config: &str) -> PathBuf {
    let zdir = dir.join("zones");
    std::fs::create_dir_all(&zdir).expect("mkdir zones");
    for (name, text) in zones {
        std::fs::write(zdir.join(name), text).expect("write zone");
    }
    let path = dir.join("meridian.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// [`write_config_dir`] into a new temp folder: the folder and the config's path.
pub fn config_dir(zones: &[(&str, &str)], config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config_dir(dir.path(), zones, config);
    (dir, path)
}

/// `meridian serve --config CONFIG`, for [`ServerProcess::spawn`] after more args or env.
pub fn serve_command(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meridian"));
    c.args(["serve", "--config"]).arg(config);
    c
}

/// Lines a child wrote on one of its pipes, read on a thread as they come.
#[derive(Default)]
struct Lines {
    /// The lines so far, and whether the pipe has reached EOF.
    state: Mutex<(Vec<String>, bool)>,
    more: Condvar,
}

impl Lines {
    fn collect(pipe: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().0.push(l);
                sink.more.notify_all();
            }
            sink.lock().1 = true;
            sink.more.notify_all();
        });
        lines
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<String>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Line `i` (from 0), waiting up to `within` for it; `None` at EOF or timeout.
    fn get(&self, i: usize, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut st = self.lock();
        loop {
            if let Some(l) = st.0.get(i) {
                return Some(l.clone());
            }
            if st.1 {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self
                .more
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `within` for EOF (the reader has everything once the process is gone).
    fn wait_eof(&self, within: Duration) {
        let st = self.lock();
        let _ = self.more.wait_timeout_while(st, within, |st| !st.1);
    }
}

/// A child process (`meridian serve`, or a helper such as etcd) that is killed when dropped,
/// so that a failing test never leaves it behind. Its stdout and stderr are read into lines as
/// they come; its stdin is a pipe kept open until the handle goes.
pub struct ServerProcess {
    child: Child,
    exited: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    /// How far [`ServerProcess::next_stdout_line`] has read.
    stdout_read: usize,
}

impl ServerProcess {
    /// `meridian serve --config CONFIG` with nothing else set.
    pub fn serve(config: &Path) -> ServerProcess {
        Self::spawn(&mut serve_command(config))
    }

    /// Starts `cmd` with its stdio piped; panics if it cannot start.
    pub fn spawn(cmd: &mut Command) -> ServerProcess {
        Self::try_spawn(cmd).unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
    }

    pub fn try_spawn(cmd: &mut Command) -> std::io::Result<ServerProcess> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        Ok(ServerProcess {
            stdin: child.stdin.take(),
            child,
            exited: None,
            stdout,
            stderr,
            stdout_read: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote on stderr so far, one entry a line (all of it, once it has exited).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines(&self.stderr)
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// What it wrote on stdout so far, one entry a line (all of it, once it has exited).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines(&self.stdout)
    }

    fn lines(&self, pipe: &Lines) -> Vec<String> {
        if self.exited.is_some() {
            // The reader thread may still be taking in the last lines.
            pipe.wait_eof(Duration::from_secs(1));
        }
        pipe.lock().0.clone()
    }

    /// Its exit status and all it wrote, as [`Command::output`] gives them; it must have exited.
    pub fn output(&self) -> Output {
        let status = self.exited.expect("output() of a process still running");
        let text = |lines: Vec<String>| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        Output {
            status,
            stdout: text(self.stdout_lines()).into_bytes(),
            stderr: text(self.stderr_lines()).into_bytes(),
        }
    }

    /// The next stdout line not yet returned here, waiting up to `within` for it.
    pub fn next_stdout_line(&mut self, within: Duration) -> Option<String> {
        let l = self.stdout.get(self.stdout_read, within)?;
        self.stdout_read += 1;
        Some(l)
    }

    /// The child's stdin.
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin")
    }

    /// Sends `sig` (libc::SIGTERM, SIGHUP, ...); panics if it has exited or kill(2) fails.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            self.exited.is_none(),
            "signal {sig} to a process that exited"
        );
        // SAFETY: kill(2) on the pid of our child, which has not been reaped (`exited`).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Its exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits up to `within` for it to exit (polling every 10 ms); `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, and its exit status within `within`; panics (with its stderr) if it lingers.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(within).unwrap_or_else(|| {
            panic!(
                "pid {} did not stop within {within:?} of SIGTERM; stderr:\n{}",
                self.pid(),
                self.stderr()
            )
        })
    }

    /// Cleans up: SIGTERM, up to `within` for it to exit, then SIGKILL. Never panics; a
    /// process that has exited is left alone.
    pub fn stop(&mut self, within: Duration) {
        if self.exited.is_some() {
            return;
        }
        // SAFETY: as in `signal`.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if self.wait_exit(within).is_none() {
            self.kill();
        }
    }

    /// SIGKILL and reap (a crash, as far as the process can tell).
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = Some(self.child.wait().expect("wait"));
        }
    }

    /// Polls `ready` every 20 ms for up to `within` until it gives a value. Panics, with the
    /// process's stderr, if the time runs out or the process exits first; `what` says what
    /// was awaited.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut ready: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = ready(self) {
                return t;
            }
            if let Some(st) = self.try_exit() {
                panic!(
                    "{what}: the process exited ({st}); stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {within:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `packet` to `addr` over UDP (again every 100 ms) until an answer comes, for up to
    /// `within`; returns the answer. Panics as [`ServerProcess::wait_until`].
    pub fn wait_udp(&mut self, addr: SocketAddr, packet: &[u8], within: Duration) -> Vec<u8> {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = vec![0u8; 65535];
        self.wait_until(&format!("a UDP answer from {addr}"), within, |_| {
            let _ = sock.send_to(packet, addr);
            let (n, _) = sock.recv_from(&mut buf).ok()?;
            Some(buf[..n].to_vec())
        })
    }

    /// Waits up to `within` until `GET path` at `addr` answers 200. Panics as
    /// [`ServerProcess::wait_until`].
    pub fn wait_http(&mut self, addr: SocketAddr, path: &str, within: Duration) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        self.wait_until(&format!("200 from GET {path} at {addr}"), within, |_| {
            http_exchange(addr, &req)
                .filter(|(code, _, _)| *code == 200)
                .map(|_| ())
        });
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
