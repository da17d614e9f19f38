//! Short-lived clients in a team's real cgroup, run while the agent lags behind a burst: the
//! setup of the "attribution that cannot be dodged" tests (issue 9), shared so that budget tests
//! can count the same calls against a team's entitlement.
//!
//! - [`TeamCgroups`]: a private cgroup2 subtree `/tokentap-sl-<hex>/{team,busy}` and the
//!   mapping rules that give each leaf a team by its cgroup path (no pid, no process name).
//! - [`spawn_curl_in`]: one curl process moved into a cgroup before it execs, making one call.
//! - [`Burst`]: looping streaming clients in the busy cgroup, so the agent has a backlog.
//! - [`AgentPause`]: the agent stopped (SIGSTOP) while the short-lived clients run, so every
//!   one of them is gone before the agent reads its first record — the lag made certain rather
//!   than hoped for. Resumed on drop, and by a backstop process should the test die.
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::{self, Spawned};
use crate::kube::Cgroup;
use crate::server::LlmServer;
use crate::{certs, env};

/// `/tokentap-sl-<hex>` with a `team` and a `busy` leaf; removed (leaves first) when dropped.
pub struct TeamCgroups {
    /// The team's leaf, e.g. `/tokentap-sl-1a2b3c/team` under the cgroup2 mount.
    pub team: Cgroup,
    /// Where the burst runs.
    pub busy: Cgroup,
    /// Declared last: dropped after the leaves, once it is empty.
    base: Cgroup,
    /// The base's cgroup path as records name it (`/tokentap-sl-<hex>`).
    pub base_path: String,
    pub team_name: String,
}

impl TeamCgroups {
    pub fn create(team_name: &str) -> TeamCgroups {
        let base_path = format!("/tokentap-sl-{}", env::random_hex(4));
        let base = Cgroup::create(&base_path);
        let team = Cgroup::create(&format!("{base_path}/team"));
        let busy = Cgroup::create(&format!("{base_path}/busy"));
        TeamCgroups { team, busy, base, base_path, team_name: team_name.to_string() }
    }

    /// The team leaf's cgroup path as a usage record's `cgroup_path` names it.
    pub fn team_path(&self) -> String {
        format!("{}/team", self.base_path)
    }

    pub fn base_dir(&self) -> &std::path::Path {
        self.base.path()
    }

    /// Mapping rules: the team leaf → `team_name`, the busy leaf → team `busy`. Only the
    /// cgroup path decides, so a call is attributed iff the agent knew the caller's cgroup.
    pub fn mapping(&self) -> String {
        let base = &self.base_path;
        format!(
            "[[rule]]\nname = \"shortlived-team\"\n[rule.match]\ncgroup_path = \"{base}/team\"\n[rule.set]\nteam = \"{}\"\n\n\
             [[rule]]\nname = \"shortlived-busy\"\n[rule.match]\ncgroup_path = \"{base}/busy\"\n[rule.set]\nteam = \"busy\"\n",
            self.team_name
        )
    }
}

/// The files one curl call reads: bearer key header and JSON body (written once, shared).
pub struct CurlCall {
    headers: PathBuf,
    body: PathBuf,
    dir: PathBuf,
    url: String,
}

impl CurlCall {
    /// A POST of `body` to `path` on `server`, with `key` as bearer token.
    pub fn new(server: &LlmServer, path: &str, key: &str, body: &Value) -> CurlCall {
        let tag = env::random_hex(4);
        let headers = server.dir.join(format!("sl-headers-{tag}"));
        let body_path = server.dir.join(format!("sl-body-{tag}.json"));
        std::fs::write(&headers, format!("Authorization: Bearer {key}\nContent-Type: application/json\n"))
            .expect("write curl headers");
        std::fs::write(&body_path, serde_json::to_vec(body).expect("json")).expect("write body");
        CurlCall { headers, body: body_path, dir: server.dir.clone(), url: format!("{}{path}", server.origin()) }
    }

    /// curl's arguments after the program name; the response goes to `out`.
    fn args(&self, out: &std::path::Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--http1.1".into(), "-sS".into(), "--cacert".into()];
        a.push(certs::certs().ca.clone().into());
        a.extend(["-w".into(), "%{http_code}\n".into(), "-H".into()]);
        a.push(format!("@{}", self.headers.display()).into());
        a.push("--data-binary".into());
        a.push(format!("@{}", self.body.display()).into());
        a.push("-o".into());
        a.push(out.into());
        a.push(self.url.clone().into());
        a
    }
}

/// One curl process moved into `cg` (by the [`Cgroup::prefix`] shell, which then execs curl):
/// it makes `call` once and exits. Its pid is the curl's (exec keeps it).
pub fn spawn_curl_in(cg: &Cgroup, call: &CurlCall) -> Spawned {
    let prefix = cg.prefix();
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..]).arg(clients::curl_path());
    cmd.args(call.args(&call.dir.join(format!("sl-response-{}", env::random_hex(4)))));
    clients::spawn(cmd, "curl", &call.dir, Stdio::null())
}

/// Clients calling in a loop from the busy cgroup, each in its own process group so that it
/// and the curl it runs at the moment are killed together.
pub struct Burst {
    loops: Vec<Child>,
    busy_dir: PathBuf,
}

impl Burst {
    /// `n` shell loops in `busy`, each running curl with `call` again and again.
    pub fn start(busy: &Cgroup, call: &CurlCall, n: usize) -> Burst {
        let script = r#"echo $$ > "$0/cgroup.procs" || exit 1; while :; do "$@" >/dev/null 2>&1 || sleep 0.05; done"#;
        let loops = (0..n)
            .map(|i| {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(script).arg(busy.path()).arg(clients::curl_path());
                cmd.args(call.args(&call.dir.join(format!("burst-response-{i}"))));
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
                env::no_proxy(&mut cmd);
                env::set_pdeathsig(&mut cmd, libc::SIGKILL);
                cmd.spawn().expect("spawn burst loop")
            })
            .collect();
        Burst { loops, busy_dir: busy.path().to_path_buf() }
    }

    /// Kills every loop and its current client, and waits until the busy cgroup is empty (so
    /// that it can be removed).
    pub fn stop(&mut self) {
        for child in &mut self.loops {
            // SAFETY: kill(2) of the process group this test created for its own child.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
        }
        self.loops.clear();
        let procs = self.busy_dir.join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&procs).is_ok_and(|s| !s.trim().is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The agent stopped with SIGSTOP until dropped. A backstop process sends SIGCONT after
/// `backstop` whatever happens to the test, so the agent is never left stopped.
pub struct AgentPause {
    pid: u32,
    backstop: Child,
}

impl AgentPause {
    pub fn new(pid: u32, backstop: Duration) -> AgentPause {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("sleep {}; kill -CONT {pid}", backstop.as_secs().max(1)));
        // Its own process group, killed whole on drop (the shell and its sleep). Not PDEATHSIG:
        // it must outlive a test process that dies while the agent is stopped.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        let backstop = cmd.spawn().expect("spawn the SIGCONT backstop");
        // SAFETY: kill(2) of the agent this test binary started.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP the agent (pid {pid})");
        AgentPause { pid, backstop }
    }
}

impl Drop for AgentPause {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the agent this test stopped, then of our own backstop child.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGCONT);
            libc::kill(-(self.backstop.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.backstop.wait();
    }
}

/// (pid, team) of the ledger's `calls` rows for `port`: what budgets are rebuilt from.
pub fn ledger_teams(ledger: &std::path::Path, port: u16) -> Vec<(u32, String)> {
    let conn = crate::ledger::read_only(ledger);
    let mut stmt =
        conn.prepare("SELECT pid, team FROM calls WHERE server_port = ?1 ORDER BY ts_ns, id").expect("prepare");
    let rows = stmt.query_map([port], |r| Ok((r.get(0)?, r.get(1)?))).expect("query calls");
    rows.collect::<Result<_, _>>().expect("read calls")
}

/// `/proc/PID` exists (a process, or a zombie not reaped yet).
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
