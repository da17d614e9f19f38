//! The Go test client (`fixtures/go_client`, standard library `net/http` + `crypto/tls`),
//! built with the installed toolchain in the layouts the agent must handle, and run against
//! the fake server.
//!
//! Start-up race: the agent inspects a program's executable when it is exec'd, concurrently
//! with the program's own start. A fresh Go binary reaches its first TLS write within a few
//! milliseconds of exec, while finding its functions (and for a stripped one, walking the
//! function table) and attaching a dozen uprobes takes longer the first time the agent sees
//! the file. The client therefore announces itself, then waits for a line on stdin; the
//! harness sends it once the agent's log says this executable is probed. That makes the test
//! about metering, not about winning a race (which [`probe_delay`] measures separately).
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::case::Case;
use crate::clients::{self, ClientRun};
use crate::expect::{record_mismatches, Expected};
use crate::server::LlmServer;
use crate::{agent, certs, env};

/// How the client binary is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Build {
    /// `go build`: non-PIE, `.symtab` present.
    Default,
    /// `-ldflags="-s -w"`: no symbols, functions only in `.gopclntab`.
    Stripped,
    /// `-buildmode=pie`.
    Pie,
}

impl Build {
    pub fn name(self) -> &'static str {
        match self {
            Build::Default => "default",
            Build::Stripped => "stripped",
            Build::Pie => "pie",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Build::Default => &[],
            Build::Stripped => &["-ldflags=-s -w"],
            Build::Pie => &["-buildmode=pie"],
        }
    }
}

/// How long the agent may take to probe a new executable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Log line of the agent once it attached to an executable.
const ATTACHED: &str = "attached probes to executable";

/// Builds (once per test binary, and only when the sources changed) one variant; returns the
/// binary's path under `target/go-client/e2e/`.
pub fn client(build: Build) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(Build, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(b, _)| *b == build) {
        return p.clone();
    }
    let root = env::workspace_dir();
    let src = env::fixtures_dir().join("go_client");
    let out = root.join("target/go-client/e2e").join(build.name()).join("go_client");
    if !up_to_date(&out, &src) {
        let started = Instant::now();
        let output = Command::new("go")
            .arg("build")
            .args(build.flags())
            .arg("-o")
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOCACHE", root.join("target/go-cache"))
            .env("GOPATH", root.join("target/go-path"))
            // Standard library only: nothing to download, and nothing may be.
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .output()
            .expect("`go` not found: `cargo xtask test` installs Debian golang-go");
        assert!(
            output.status.success(),
            "go build ({}) failed:\n{}",
            build.name(),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("go_client {} built in {:?}", build.name(), started.elapsed());
    }
    built.push((build, out.clone()));
    out
}

fn up_to_date(out: &Path, src: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest = ["main.go", "go.mod"].iter().filter_map(|f| modified(&src.join(f))).max();
    matches!((modified(out), newest), (Some(o), Some(n)) if o >= n)
}

/// Arguments for one run of the client.
pub struct GoRun<'a> {
    pub build: Build,
    pub scenario: &'a str,
    /// Offer h2 by ALPN and require HTTP/2 (else require HTTP/1.1).
    pub http2: bool,
}

/// Runs the client against `server` with the case's key and prompt; waits for the agent to
/// have probed the binary before letting it make its first call. Panics unless it succeeds.
pub fn run(case: &Case, server: &LlmServer, opts: &GoRun<'_>) -> ClientRun {
    run_bin(case, server, &client(opts.build), opts, true)
}

/// A private copy of a variant's binary in the server's dir: a file (inode) the agent has
/// never seen.
pub fn fresh_copy(server: &LlmServer, build: Build) -> PathBuf {
    let copy = server.dir.join(format!("go_client-{}", build.name()));
    std::fs::copy(client(build), &copy).expect("copy the Go client");
    copy
}

/// Runs `bin`; with `synchronized`, first waits until the agent has probed it (see the module
/// docs), else lets it race the agent.
pub fn run_bin(case: &Case, server: &LlmServer, bin: &Path, opts: &GoRun<'_>, synchronized: bool) -> ClientRun {
    run_bin_hooked(case, server, bin, opts, synchronized, &mut || {})
}

/// [`run_bin`], calling `on_release` once the agent has probed the client, just before the
/// client is let go (to disturb the agent while the call runs).
pub fn run_bin_hooked(
    case: &Case,
    server: &LlmServer,
    bin: &Path,
    opts: &GoRun<'_>,
    synchronized: bool,
    on_release: &mut dyn FnMut(),
) -> ClientRun {
    let prompt = case.prompt_file(server);
    let tag = format!("go_client-{}-{}", opts.build.name(), env::random_hex(3));
    let err_path = server.dir.join(format!("{tag}.stderr"));
    let mut cmd = Command::new(bin);
    cmd.arg("-base-url")
        .arg(server.openai_base_url())
        .arg("-ca")
        .arg(&certs::certs().ca)
        .arg("-api-key")
        .arg(&case.api_key)
        .arg("-scenario")
        .arg(opts.scenario)
        .arg("-prompt-file")
        .arg(&prompt)
        .env_remove("SSLKEYLOGFILE")
        .env_remove("GODEBUG");
    if opts.http2 {
        cmd.arg("-http2");
    }
    if synchronized {
        cmd.arg("-wait-stdin");
    }
    env::no_proxy(&mut cmd);
    env::set_pdeathsig(&mut cmd, libc::SIGKILL);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let spawned_at = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut identity = String::new();
    stdout.read_line(&mut identity).expect("identity line");
    let id: Value = serde_json::from_str(identity.trim()).expect("identity JSON");
    assert_eq!(id["pid"].as_u64(), Some(pid as u64), "the client is the process we spawned");

    let mut stdin = child.stdin.take().expect("piped stdin");
    if synchronized {
        wait_probed(bin);
        on_release();
        stdin.write_all(b"go\n").expect("release the client");
    }
    drop(stdin);

    let status = clients::wait(&mut child, "go_client", spawned_at);
    let run = ClientRun {
        what: tag,
        pid,
        comm: id["comm"].as_str().map(String::from),
        exe: id["exe"].as_str().map(String::from),
        starttime_ticks: id["starttime_ticks"].as_u64(),
        spawned_at,
        status,
        stdout: identity,
        stderr_tail: env::tail_lines(&err_path, 10),
    };
    case.expect_ok(&run);
    run
}

/// Waits until the agent's log reports probes on `bin` (the harness's own build path, which
/// the agent resolves `/proc/PID/exe` to).
pub fn wait_probed(bin: &Path) {
    let log = &agent::agent().stderr;
    let want = bin.display().to_string();
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.contains(ATTACHED) && l.contains(&want) && l.contains("library=\"go\"")) {
            return;
        }
        assert!(Instant::now() < deadline, "the agent did not probe {want} within {PROBE_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`Case::check_all`] for Go records: every field as for OpenSSL clients, but the record
/// must name the `go` TLS library. Concurrent calls finish in any order, so each record is
/// paired with a server entry it fully matches (each entry used once), not by position.
pub fn check_all(case: &Case, server: &LlmServer, recs: &[Value], client: &ClientRun) {
    let entries = server.entries();
    assert_eq!(entries.len(), recs.len(), "server answered {} request(s), agent wrote {}", entries.len(), recs.len());
    let expected: Vec<Expected> = entries
        .iter()
        .map(|e| {
            Expected::from_entry(e, server.port).with_process(client.pid, client.comm.as_deref(), client.exe.as_deref())
        })
        .collect();
    // `Expected` assumes OpenSSL clients; the library is checked separately.
    let mismatches = |rec: &Value, exp: &Expected| -> Vec<String> {
        record_mismatches(rec, exp, case.started, &case.secrets())
            .into_iter()
            .filter(|m| !m.starts_with("tls_library:"))
            .collect()
    };
    let mut used = vec![false; expected.len()];
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(rec["tls_library"], "go", "record #{i}: tls_library");
        match (0..expected.len()).find(|&k| !used[k] && mismatches(rec, &expected[k]).is_empty()) {
            Some(k) => used[k] = true,
            None => panic!(
                "record #{i} of {} matches no server entry; against entry #{i}:\n  {}",
                recs.len(),
                mismatches(rec, &expected[i]).join("\n  ")
            ),
        }
    }
}

/// The Go client in reverse-proxy mode: a TLS server for clients, a TLS client of `upstream`.
/// Killed on drop.
pub struct GoProxy {
    pub run: ClientRun,
    pub port: u16,
    child: std::process::Child,
}

impl GoProxy {
    /// Starts the proxy in front of `upstream` and waits until the agent has probed it.
    pub fn start(upstream: &LlmServer, build: Build) -> GoProxy {
        let bin = client(build);
        let certs = certs::certs();
        let err_path = upstream.dir.join(format!("go_proxy-{}.stderr", env::random_hex(3)));
        let mut cmd = Command::new(&bin);
        cmd.arg("-proxy-upstream")
            .arg(upstream.origin())
            .arg("-ca")
            .arg(&certs.ca)
            .arg("-cert")
            .arg(&certs.cert)
            .arg("-key")
            .arg(&certs.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err_path).expect("stderr file"));
        env::no_proxy(&mut cmd);
        env::set_pdeathsig(&mut cmd, libc::SIGKILL);
        let spawned_at = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = |what: &str| -> Value {
            let mut l = String::new();
            stdout.read_line(&mut l).unwrap_or_else(|e| panic!("go proxy {what}: {e}"));
            serde_json::from_str(l.trim()).unwrap_or_else(|_| panic!("go proxy {what} line is not JSON"))
        };
        let id = line("identity");
        let port = line("port")["port"].as_u64().expect("port") as u16;
        wait_probed(&bin);
        use std::os::unix::process::ExitStatusExt;
        let run = ClientRun {
            what: "go_proxy".into(),
            pid: child.id(),
            comm: id["comm"].as_str().map(String::from),
            exe: id["exe"].as_str().map(String::from),
            starttime_ticks: id["starttime_ticks"].as_u64(),
            spawned_at,
            status: std::process::ExitStatus::from_raw(0),
            stdout: String::new(),
            stderr_tail: String::new(),
        };
        GoProxy { run, port, child }
    }

    /// `https://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("https://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for GoProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
