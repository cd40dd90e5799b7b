//! The real `creditgate` binary as a child process: its environment set from
//! scratch, its stderr (the log) collected line by line so a test can wait
//! for a line, signals sent with `kill(2)`. Killed if a test leaves it
//! running.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_creditgate");

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

pub struct Daemon {
    child: Child,
    lines: Lines,
}

impl Daemon {
    /// Runs `creditgate <args>` with only `env` (plus `RUST_LOG=info`) set.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(Command::new(BIN), args, env)
    }

    /// Like `start`, under a limit of `fds` open descriptors (`ulimit -n`).
    pub fn start_with_fd_limit(args: &[&str], env: &[(&str, &str)], fds: u32) -> Daemon {
        let mut sh = Command::new("sh");
        sh.args(["-c", &format!("ulimit -n {fds} && exec \"$0\" \"$@\""), BIN]);
        Daemon::spawn(sh, args, env)
    }

    fn spawn(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = command
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the creditgate binary");
        let stderr = child.stderr.take().unwrap();
        let lines: Lines = Arc::default();
        let shared = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lock, cvar) = &*shared;
                lock.lock().unwrap().push(line);
                cvar.notify_all();
            }
        });
        Daemon { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The first log line containing `needle`, waiting at most `limit`.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> Option<String> {
        let (lock, cvar) = &*self.lines;
        let deadline = Instant::now() + limit;
        let mut lines = lock.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            lines = cvar.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// The address from the "listening on http://ADDR" line.
    pub fn addr(&self) -> SocketAddr {
        let line = self
            .wait_for_line("listening on http://", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the daemon did not start:\n{}", self.log()));
        line.rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
