//! The kernel side of enforcement, end to end: the real eBPF object loaded through the agent
//! library (`Capture::load`), real clients in real cgroups, the fake LLM upstream's log as the
//! ground truth of what left. Each test uses its own cgroups and server and only ever sets
//! verdicts on its own cgroups, so agents of other tests on the host are not affected.
use std::{
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokentap::{
    capture::{probes, Capture, Hold, LoadOptions, ProcRecord, TlsLibrary},
    discovery::Discovery,
    enforce::{
        actuate::{self, destroy_connections, ActError, Owner},
        kernel::{Mode, Target},
    },
};
use tokentap_common::verdict;
use tokentap_tests::{
    clients,
    enforce::{wait_state, DrivenClient},
    env,
    kube::Cgroup,
    require_bpf, LlmServer, ServerOpts,
};

struct World {
    capture: Capture,
    proc: RingBuf<MapData>,
}

/// One loaded capture per test binary, used by one test at a time.
fn world() -> MutexGuard<'static, World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    let m = WORLD.get_or_init(|| {
        let (mut capture, rings) = Capture::load(&LoadOptions {
            call_cap: 64 * 1024,
            ring_bytes: 1 << 20,
            plain_ports: Vec::new(),
            enforce: true,
        })
        .expect("load the eBPF object (cargo xtask build first)");
        let mut discovery = Discovery::new();
        discovery.scan_standard_dirs(&mut capture);
        let libssl = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        if !discovery.attached.iter().any(|a| a.library == TlsLibrary::OpenSsl) {
            capture.attach_library(libssl, probes::OPENSSL).expect("probe libssl");
        }
        Mutex::new(World { capture, proc: rings.proc })
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test's own cgroup. Whatever way the test ends, no process in it is left stopped or alive.
/// (A verdict left on it is inert: cgroup v2 ids are never reused.)
struct Enforced {
    cgroup: Cgroup,
    id: u64,
}

impl Enforced {
    fn new(name: &str) -> Enforced {
        let cgroup = Cgroup::create(&format!("tokentap-test/enforce-{name}-{}", env::random_hex(4)));
        let id = std::fs::metadata(cgroup.path()).expect("cgroup dir").ino();
        Enforced { cgroup, id }
    }

    fn set(&self, world: &mut World, mode: Mode) {
        world.capture.enforcement().set(Target::Cgroup(self.id), mode).expect("set verdict");
    }

    fn clear(&self, world: &mut World) {
        world.capture.enforcement().clear(Target::Cgroup(self.id));
    }
}

impl Drop for Enforced {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = actuate::processes_in_cgroup(self.id);
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) of a test client (in the test's own cgroup) by pid.
                unsafe {
                    libc::kill(pid as i32, libc::SIGCONT);
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Drains earlier notices so a test sees only its own.
fn drain(world: &mut World) {
    while world.proc.next().is_some() {}
}

/// The next HELD (or ACTED) notice about `pid`, within `timeout`.
fn next_notice(world: &mut World, pid: u32, timeout: Duration) -> Option<ProcRecord> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        while let Some(item) = world.proc.next() {
            let record = tokentap::capture::decode_proc(&item);
            drop(item);
            match record {
                Ok(r @ ProcRecord::Held(Hold { id, .. })) if id.tgid == pid => return Some(r),
                Ok(ProcRecord::Acted(a)) if a.id.tgid == pid => return Some(ProcRecord::Acted(a)),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn held(world: &mut World, pid: u32) -> Hold {
    match next_notice(world, pid, Duration::from_secs(20)) {
        Some(ProcRecord::Held(h)) => h,
        other => panic!("expected a HELD notice for pid {pid}, got {other:?}"),
    }
}

fn server_addr(server: &LlmServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

/// (a) GATE: the write is held before it reaches the library; a pass and SIGCONT let it out.
#[test]
fn gate_holds_a_write_until_a_pass() {
    if !require_bpf() {
        return;
    }
    let mut w = world();
    let server = LlmServer::start(ServerOpts::default());
    let cg = Enforced::new("gate");
    let mut client = DrivenClient::start(&server, &cg.cgroup.prefix());
    drain(&mut w);
    cg.set(&mut w, Mode::Gate);
    client.send("req");
    let hold = held(&mut w, client.pid);
    assert_eq!(hold.cgroup_id, cg.id);
    assert!(!hold.failed);
    assert!(wait_state(client.pid, Some('T'), Duration::from_secs(5)), "held client is stopped");
    // Held long enough that a write that had slipped through would have been answered.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.line(Duration::from_millis(10)), None, "a held client gets no answer");
    assert_eq!(server.entries().len(), 0, "nothing reached the upstream while held");
    w.capture.enforcement().grant_pass(hold.id).expect("grant pass");
    actuate::resume(client.pid).expect("resume");
    let r = client.result(Duration::from_secs(30)).expect("an answer after the pass");
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(server.entries().len(), 1);
    // The response was read: the pass is gone and the next request is held again.
    assert!(!w.capture.enforcement().has_pass(hold.id));
    client.send("req");
    let again = held(&mut w, client.pid);
    assert_eq!(again.id, hold.id, "same keep-alive connection");
    // The kernel learnt the connection's socket from its first write.
    let sock = w.capture.enforcement().socket_of(hold.id).expect("CONN_FDS names the socket");
    assert_eq!(sock.peer, server_addr(&server));
    w.capture.enforcement().grant_pass(again.id).expect("grant pass");
    actuate::resume(client.pid).expect("resume");
    assert_eq!(client.result(Duration::from_secs(30)).expect("answer")["status"], 200);
    assert_eq!(server.entries().len(), 2);
    assert!(w.capture.counters().held >= 2);
    cg.clear(&mut w);
}

/// A process entry wins over its cgroup's: FREE exempts one process of a held cgroup, and a
/// process-level GATE holds a process whose cgroup has no verdict.
#[test]
fn process_verdict_overrides_its_cgroup() {
    if !require_bpf() {
        return;
    }
    let mut w = world();
    let server = LlmServer::start(ServerOpts::default());
    let cg = Enforced::new("proc-free");
    let mut client = DrivenClient::start(&server, &cg.cgroup.prefix());
    drain(&mut w);
    cg.set(&mut w, Mode::Gate);
    let me = Target::Process(client.pid);
    w.capture.enforcement().set(me, Mode::Free).expect("set");
    assert_eq!(client.request()["status"], 200, "an exempt process is not held");
    assert!(next_notice(&mut w, client.pid, Duration::from_millis(200)).is_none());
    cg.clear(&mut w);
    w.capture.enforcement().set(me, Mode::Gate).expect("set");
    client.send("req");
    let hold = held(&mut w, client.pid);
    w.capture.enforcement().grant_pass(hold.id).expect("pass");
    actuate::resume(client.pid).expect("resume");
    assert_eq!(client.result(Duration::from_secs(30)).expect("answer")["status"], 200);
    w.capture.enforcement().forget_process(client.pid);
    assert_eq!(w.capture.enforcement().get(me), None);
    assert_eq!(server.entries().len(), 2);
}

/// (a') The same hold for curl (libcurl's `SSL_write`), a one-shot client run to completion.
#[test]
fn gate_holds_curl_until_resumed() {
    if !require_bpf() {
        return;
    }
    let mut w = world();
    let server = LlmServer::start(ServerOpts::default());
    let cg = Enforced::new("gate-curl");
    drain(&mut w);
    cg.set(&mut w, Mode::Gate);
    let body = server.dir.join("body.json");
    std::fs::write(&body, br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}"#)
        .expect("write body");
    let prefix = cg.cgroup.prefix();
    let mut curl = std::process::Command::new(&prefix[0]);
    curl.args(&prefix[1..])
        .arg(clients::curl_path())
        .args(["--http1.1", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&tokentap_tests::certs().ca)
        .args(["-H", "Authorization: Bearer sk-enforce-not-a-real-key", "-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/v1/chat/completions", server.origin()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    env::no_proxy(&mut curl);
    env::set_pdeathsig(&mut curl, libc::SIGKILL);
    let child = curl.spawn().expect("spawn curl");
    let pid = child.id();
    let hold = held(&mut w, pid);
    assert_eq!(hold.library, TlsLibrary::OpenSsl);
    assert!(wait_state(pid, Some('T'), Duration::from_secs(5)), "held curl is stopped");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.entries().len(), 0, "nothing reached the upstream while held");
    w.capture.enforcement().grant_pass(hold.id).expect("pass");
    actuate::resume(pid).expect("resume");
    let out = child.wait_with_output().expect("curl finishes");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(server.entries().len(), 1);
    cg.clear(&mut w);
}

/// (b) DENY: new AI connections refused for the denied cgroup only; an idle keep-alive
/// connection destroyed, so the client's next request fails and the upstream sees nothing.
#[test]
fn deny_refuses_connects_and_destroys_keepalive() {
    if !require_bpf() {
        return;
    }
    let mut w = world();
    let server = LlmServer::start(ServerOpts::default());
    let denied = Enforced::new("deny");
    let other = Enforced::new("free");
    w.capture.enforcement().add_ai_peer(server_addr(&server)).expect("AI peer");
    let mut a = DrivenClient::start(&server, &denied.cgroup.prefix());
    let mut b = DrivenClient::start(&server, &other.cgroup.prefix());
    assert_eq!(a.request()["status"], 200);
    assert_eq!(b.request()["status"], 200);
    assert_eq!(server.entries().len(), 2);
    drain(&mut w);
    denied.set(&mut w, Mode::Deny);
    let is_ai = |peer: SocketAddr| peer == server_addr(&server);
    let n = destroy_connections(Owner::Cgroup(denied.id), is_ai).expect("destroy");
    assert_eq!(n, 1, "the denied client's keep-alive connection");
    assert_eq!(destroy_connections(Owner::Cgroup(denied.id), is_ai).expect("destroy"), 0);
    // The next write is held (DENY); user space resumes it, and it fails on the dead socket.
    a.send("req");
    let hold = held(&mut w, a.pid);
    assert!(wait_state(a.pid, Some('T'), Duration::from_secs(5)));
    actuate::resume(a.pid).expect("resume");
    let r = a.result(Duration::from_secs(30)).expect("answer");
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        matches!(r["errno"].as_i64(), Some(e) if e == libc::ECONNABORTED as i64 || e == libc::EPIPE as i64)
            || r["error"].as_str().is_some_and(|e| e.contains("Abort") || e.contains("Broken") || e.contains("SSL")),
        "a connection error, got {r}"
    );
    assert_eq!(hold.id.tgid, a.pid);
    eprintln!("denied client saw: {} errno {}", r["error"], r["errno"]);
    // A new connection is refused outright (connect4: EPERM), without any hold.
    let r = a.request();
    assert_eq!(r["errno"], libc::EPERM, "{r}");
    eprintln!("denied client's new connection: {} errno {}", r["error"], r["errno"]);
    assert!(w.capture.counters().connect_denied >= 1);
    // The other cgroup is untouched, on its old connection and on a new one.
    assert_eq!(b.request()["status"], 200);
    b.send("close");
    b.result(Duration::from_secs(10)).expect("closed");
    assert_eq!(b.request()["status"], 200);
    assert_eq!(server.entries().len(), 4, "only the free client's requests arrived");
    assert_eq!(a.state().map(|s| s != 'T'), Some(true), "the denied client survives, running");
    w.capture.enforcement().remove_ai_peer(server_addr(&server));
    denied.clear(&mut w);
}

/// (b') DENY decided at the hold: the held write's connection is destroyed while the process is
/// stopped, and the write fails once it is resumed; the request never arrives.
#[test]
fn deny_at_the_hold_fails_the_pending_write() {
    if !require_bpf() {
        return;
    }
    let mut w = world();
    let server = LlmServer::start(ServerOpts::default());
    let cg = Enforced::new("deny-held");
    let mut client = DrivenClient::start(&server, &cg.cgroup.prefix());
    assert_eq!(client.request()["status"], 200);
    drain(&mut w);
    cg.set(&mut w, Mode::Deny);
    client.send("req");
    let hold = held(&mut w, client.pid);
    assert!(wait_state(client.pid, Some('T'), Duration::from_secs(5)));
    let sock = w.capture.enforcement().socket_of(hold.id).expect("the held connection's socket");
    let n = destroy_connections(Owner::Process(client.pid), |peer| peer == sock.peer).expect("destroy");
    assert_eq!(n, 1);
    actuate::resume(client.pid).expect("resume");
    let r = client.result(Duration::from_secs(30)).expect("answer");
    assert_eq!(r["ok"], false, "{r}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.entries().len(), 1, "the denied request never arrived");
    assert_eq!(client.state().map(|s| s != 'T'), Some(true), "the client survives, running");
    cg.clear(&mut w);
}

/// (c) SIGNAL on a tracked connection: the signal is sent from the write probe, and the
/// request never reaches the upstream.
#[test]
fn signal_kills_before_the_request_leaves() {
    if !require_bpf() {
        return;
    }
    let mut w = world();
    let server = LlmServer::start(ServerOpts::default());
    let cg = Enforced::new("signal");
    let mut client = DrivenClient::start(&server, &cg.cgroup.prefix());
    drain(&mut w);
    // The first request is held (the connection is not judged yet) and let through; that
    // names the connection, which the test then marks as AI traffic as the tracker would.
    cg.set(&mut w, Mode::Signal(libc::SIGTERM));
    client.send("req");
    let hold = held(&mut w, client.pid);
    w.capture.enforcement().grant_pass(hold.id).expect("pass");
    actuate::resume(client.pid).expect("resume");
    assert_eq!(client.result(Duration::from_secs(30)).expect("answer")["status"], 200);
    w.capture.set_verdict(hold.id, verdict::TRACK);
    let before = w.capture.counters().signalled;
    client.send("req");
    match next_notice(&mut w, client.pid, Duration::from_secs(20)) {
        Some(ProcRecord::Acted(a)) => assert_eq!((a.signal, a.failed), (libc::SIGTERM, false)),
        other => panic!("expected ACTED, got {other:?} (first hold {hold:?})"),
    }
    let status = client.wait_exit(Duration::from_secs(10)).expect("client killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.entries().len(), 1, "the signalled request never reached the upstream");
    assert!(w.capture.counters().signalled > before);
    cg.clear(&mut w);
}

/// (d) The guards: init and the agent itself are never signalled.
#[test]
fn guards_refuse_init_and_agent() {
    assert_eq!(actuate::send_signal(1, libc::SIGTERM), Err(ActError::Init(1)));
    let me = std::process::id();
    assert_eq!(actuate::send_signal(me, libc::SIGSTOP), Err(ActError::Agent(me)));
    assert_eq!(actuate::resume(1), Err(ActError::Init(1)));
    if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
        assert_eq!(actuate::send_signal(2, libc::SIGKILL), Err(ActError::KernelThread(2)));
    }
    let gone = destroy_connections(Owner::Process(1), |_| true).unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::PermissionDenied);
}
