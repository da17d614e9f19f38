//! A real terminal for interactive commands (`tokentap top`): a tmux server of the test's own
//! (private socket, no user configuration), keys sent with `send-keys`, the screen read with
//! `capture-pane`. The pane stays after its program exits, so a test can read the exit status
//! and what the terminal shows afterwards.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `argv` in a detached `width`×`height` terminal; `dir` holds the socket.
    pub fn start<S: AsRef<OsStr>>(dir: &Path, width: u16, height: u16, argv: &[S]) -> Tmux {
        let socket = dir.join(format!("tmux-{}.sock", crate::env::random_hex(4)));
        let conf = dir.join("tmux.conf");
        // remain-on-exit: the exit status stays readable. A fixed TERM, whatever the CI has.
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g default-terminal screen-256color\nset -g status off\n")
            .expect("write tmux.conf");
        let t = Tmux { socket };
        let mut cmd = t.cmd();
        cmd.arg("-f").arg(&conf).args(["new-session", "-d", "-s", "t", "-x"]);
        cmd.arg(width.to_string()).arg("-y").arg(height.to_string()).arg("--").args(argv);
        let out = cmd.output().expect("run tmux (is it installed? cargo xtask test installs it)");
        assert!(out.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys by tmux name (`q`, `Tab`, `C-c`, `Up`…).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The screen as text, one line per row (trailing spaces trimmed by tmux).
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// The screen once `ready` holds for it; panics with the last screen after `timeout`.
    pub fn wait_screen(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ready(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: not seen within {timeout:?}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `Some(status)` once the program has exited; a program killed by signal N is `128 + N`,
    /// as a shell would say.
    pub fn exit_status(&self) -> Option<i32> {
        let s = self.run(&["display-message", "-p", "-t", "t", "#{pane_dead}:#{pane_dead_status}:#{pane_pid}"]);
        let mut it = s.trim().split(':');
        match (it.next(), it.next(), it.next()) {
            (Some("1"), Some(code), _) if !code.is_empty() => code.parse().ok(),
            // The tmux server sometimes reaps its pane's program only seconds after it exited
            // (seen on the CI machines): the kernel already has the status of the zombie.
            (_, _, Some(pid)) => zombie_status(pid),
            _ => None,
        }
    }

    /// Waits for the program to exit; its status.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_status() {
                return code;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}; the screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The exit status of `pid` if it is a zombie, from `/proc/PID/stat` (field 52, `exit_code`, in
/// `waitpid` form).
fn zombie_status(pid: &str) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    // `fields[0]` is field 3 (state), so field 52 is `fields[49]`.
    let code: i32 = fields.get(49)?.parse().ok()?;
    Some(if code & 0x7f == 0 { (code >> 8) & 0xff } else { 128 + (code & 0x7f) })
}
