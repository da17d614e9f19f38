//! Process owner: uid from /proc/PID/status, user name from /etc/passwd.
//!
//! Names come from passwd files rather than NSS (`getpwuid`): NSS may call out to LDAP or sssd,
//! which must not stall the event loop, and it cannot answer for a container's own users.
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Real uid from a `/proc/PID/status` text (`Uid:\treal\teffective\tsaved\tfs`).
pub fn uid_from_status(text: &str) -> Option<u32> {
    let ids = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    parse_id(ids.split_whitespace().next()?)
}

/// uid → name from an `/etc/passwd` text; malformed lines skipped.
///
/// The first entry for a uid wins, as with `getpwuid`. NIS compat lines (`+`, `-`) and
/// comments are skipped: they name no local user.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        // Seven fields or it is not a passwd line: this also rejects shadow-format files (nine),
        // where the third field is a date, not a uid.
        if fields.len() != 7 {
            continue;
        }
        let name = fields[0];
        // Names end up as labels in usage records: nothing that could break a line or a field.
        let plausible = !name.is_empty()
            && !name.starts_with(['+', '-', '#'])
            && name.chars().all(|c| !c.is_control() && !c.is_whitespace());
        if let Some(uid) = parse_id(fields[2]).filter(|_| plausible) {
            users.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    users
}

/// A decimal id; `u32::from_str` would also take `+5`, and `(uid_t)-1` means "no id".
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|id| *id != u32::MAX)
}

/// A uid as seen from our user namespace, translated into the namespace of a process whose
/// `/proc/PID/uid_map` is `map` (`inside outside count` lines, `outside` relative to the reader).
/// Rootless containers run as e.g. uid 100999 on the host while their passwd says 999.
fn uid_inside(map: &str, uid: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        let uid = u64::from(uid);
        (outside <= uid && uid < outside.saturating_add(count)).then(|| u32::try_from(inside + (uid - outside)).ok())?
    })
}

/// Re-read a passwd file at least this often even if its stamp looks the same: mtime has
/// coarse granularity on some filesystems and config management may restore it on purpose.
const REFRESH: Duration = Duration::from_secs(60);
/// Passwd files are kilobytes; a container can put anything at its /etc/passwd.
const MAX_PASSWD_BYTES: u64 = 8 << 20;
/// Container roots cached; the least recently used is dropped past this, as containers come and go.
const MAX_ROOTS: usize = 256;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

#[derive(Default)]
struct Passwd {
    stamp: Option<Stamp>,
    read_at: Option<Instant>,
    last_used: Option<Instant>,
    users: HashMap<u32, String>,
}

impl Passwd {
    /// Brings the cache up to date with `file`; a file that cannot be opened or read keeps the
    /// last good copy, since a passwd file being replaced is far likelier than users vanishing.
    fn refresh(&mut self, now: Instant, file: io::Result<File>) {
        self.last_used = Some(now);
        let Ok(file) = file else { return };
        let Ok(meta) = file.metadata() else { return };
        if !meta.is_file() {
            return;
        }
        let stamp = Stamp::of(&meta);
        let recent = self.read_at.is_some_and(|at| now.saturating_duration_since(at) < REFRESH);
        if self.stamp == Some(stamp) && recent {
            return;
        }
        let mut bytes = Vec::new();
        if file.take(MAX_PASSWD_BYTES).read_to_end(&mut bytes).is_err() {
            return;
        }
        self.users = parse_passwd(&String::from_utf8_lossy(&bytes));
        self.stamp = Some(stamp);
        self.read_at = Some(now);
    }
}

/// Cached lookups against the host's /etc/passwd (re-read at most once a minute, or when its mtime changes);
/// a process in a container has uids of its own image: look them up in `/proc/PID/root/etc/passwd` first when
/// given a pid whose root differs from ours (compare `stat` dev+ino of `/proc/PID/root` and `/`).
///
/// The file's stamp (dev, inode, size, mtime) is checked on every lookup, which costs an
/// open and an fstat: lookups happen once per new process, not per call.
pub struct Users {
    host_passwd: PathBuf,
    proc: PathBuf,
    own_root: Option<(u64, u64)>,
    host: Passwd,
    /// By (dev, inode) of the container's root directory: processes of one container share it,
    /// and every container's root is its own mount, so two never collide.
    roots: HashMap<(u64, u64), Passwd>,
}

impl Default for Users {
    fn default() -> Self {
        Self::new()
    }
}

impl Users {
    pub fn new() -> Self {
        Self::with_paths(PathBuf::from("/etc/passwd"), PathBuf::from("/proc"))
    }

    fn with_paths(host_passwd: PathBuf, proc: PathBuf) -> Self {
        let own_root = std::fs::metadata("/").ok().map(|m| (m.dev(), m.ino()));
        Users { host_passwd, proc, own_root, host: Passwd::default(), roots: HashMap::new() }
    }

    pub fn name(&mut self, pid: u32, uid: u32) -> Option<String> {
        self.name_at(pid, uid, Instant::now())
    }

    fn name_at(&mut self, pid: u32, uid: u32, now: Instant) -> Option<String> {
        if let Some(name) = self.container_name(pid, uid, now) {
            return Some(name);
        }
        // Without a user namespace a container's uid is the host's uid too, so the host's name
        // for it is still true when the image has no entry of its own.
        self.host.refresh(now, File::open(&self.host_passwd));
        self.host.users.get(&uid).cloned()
    }

    fn container_name(&mut self, pid: u32, uid: u32, now: Instant) -> Option<String> {
        let dir = self.proc.join(pid.to_string());
        // One descriptor for both the identity check and the read, so that a pid reused in
        // between cannot pair one container's key with another's file.
        let root = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir.join("root")).ok()?;
        let meta = root.metadata().ok()?;
        let key = (meta.dev(), meta.ino());
        if Some(key) == self.own_root {
            return None;
        }
        let uid = match std::fs::read_to_string(dir.join("uid_map")) {
            Ok(map) => uid_inside(&map, uid)?,
            // Only kernels without user namespaces lack the file; ids are global there.
            Err(_) => uid,
        };
        if !self.roots.contains_key(&key) && self.roots.len() >= MAX_ROOTS {
            let oldest = self.roots.iter().min_by_key(|(_, p)| p.last_used).map(|(k, _)| *k);
            self.roots.retain(|k, _| Some(*k) != oldest);
        }
        let passwd = self.roots.entry(key).or_default();
        passwd.refresh(now, open_passwd_in(&root));
        passwd.users.get(&uid).cloned()
    }
}

/// `etc/passwd` under a container's root without following symlinks: the agent runs as root
/// and the container controls that tree, so an absolute link there would otherwise resolve
/// against the agent's own root and read a host file. Non-blocking so a FIFO cannot stall us.
fn open_passwd_in(root: &File) -> io::Result<File> {
    let etc = openat(root, c"etc", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
    openat(&etc, c"passwd", libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
}

fn openat(dir: &File, name: &CStr, flags: libc::c_int) -> io::Result<File> {
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both alive for the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    const STATUS: &str = "Name:\tsudo\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t41872\nNgid:\t0\nPid:\t41872\n\
        PPid:\t41871\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\n\
        Groups:\t4 27 1000 \nNStgid:\t41872\nNSpid:\t41872\nVmPeak:\t   11036 kB\n";

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        \n\
        # local accounts\n\
        alice:x:1000:1000:Alice Example,,,:/home/alice:/bin/bash\n\
        toor:x:0:0:second root:/root:/bin/sh\n\
        +@admins::::::\n\
        -bob::::::\n\
        +::::::\n\
        truncated:x:1001\n\
        badid:x:abc:1::/:/bin/sh\n\
        plus:x:+5:5::/:/bin/sh\n\
        neg:x:-1:5::/:/bin/sh\n\
        nouid:x:4294967295:5::/:/bin/sh\n\
        two words:x:1002:5::/:/bin/sh\n\
        shadowy:$6$salt$hash:19000:0:99999:7:::\n\
        carol:x:1003:1003::/home/carol:/bin/zsh\r\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";

    #[test]
    fn uid_is_the_real_one() {
        assert_eq!(uid_from_status(STATUS), Some(1000));
        assert_eq!(uid_from_status("Name:\tx\nUid:\t0\t0\t0\t0\n"), Some(0));
        for bad in ["", "Name:\tx\n", "Uid:\n", "Uid:\t-1\t0\t0\t0\n", "Uid:\tx\n", "Gid:\t5\t5\t5\t5\n"] {
            assert_eq!(uid_from_status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn passwd_lines() {
        let users = parse_passwd(PASSWD);
        let mut got: Vec<(u32, &str)> = users.iter().map(|(k, v)| (*k, v.as_str())).collect();
        got.sort();
        let want = [(0, "root"), (1, "daemon"), (33, "www-data"), (1000, "alice"), (1003, "carol"), (65534, "nobody")];
        assert_eq!(got, want);
        assert!(parse_passwd("").is_empty());
        assert!(parse_passwd(":::::::\n\0:x:1:1::/:\n").is_empty());
    }

    #[test]
    fn uid_maps() {
        let identity = "         0          0 4294967295\n";
        assert_eq!(uid_inside(identity, 1000), Some(1000));
        // Rootless Podman: the user's own uid is root inside, its subuid range the rest.
        let rootless = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(uid_inside(rootless, 1000), Some(0));
        assert_eq!(uid_inside(rootless, 100000), Some(1));
        assert_eq!(uid_inside(rootless, 100998), Some(999));
        assert_eq!(uid_inside(rootless, 0), None);
        assert_eq!(uid_inside(rootless, 165536), None);
        assert_eq!(uid_inside("", 0), None);
        assert_eq!(uid_inside("garbage\n4294967295 0 2\n", 1), None);
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("tokentap-users-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, text: &str, mtime_secs: u64) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(mtime_secs);
        File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
    }

    #[test]
    fn host_cache_follows_the_file() {
        let tmp = Scratch::new("host");
        let passwd = tmp.0.join("passwd");
        write(&passwd, "alice:x:1000:1000::/home/alice:/bin/sh\n", 1_700_000_000);
        let mut users = Users::with_paths(passwd.clone(), tmp.0.join("proc"));
        let t0 = Instant::now();
        assert_eq!(users.name_at(1, 1000, t0).as_deref(), Some("alice"));
        assert_eq!(users.name_at(1, 1001, t0), None);

        // Same size and mtime: the cached copy stands until the minute is up.
        write(&passwd, "alixe:x:1000:1000::/home/alice:/bin/sh\n", 1_700_000_000);
        assert_eq!(users.name_at(1, 1000, t0 + Duration::from_secs(30)).as_deref(), Some("alice"));
        assert_eq!(users.name_at(1, 1000, t0 + Duration::from_secs(61)).as_deref(), Some("alixe"));

        // A new mtime is picked up at once.
        write(&passwd, "alice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n", 1_700_000_100);
        assert_eq!(users.name_at(1, 1001, t0 + Duration::from_secs(62)).as_deref(), Some("bob"));

        // A vanished file keeps the last good copy.
        fs::remove_file(&passwd).unwrap();
        assert_eq!(users.name_at(1, 1001, t0 + Duration::from_secs(200)).as_deref(), Some("bob"));
    }

    #[test]
    fn containers_have_users_of_their_own() {
        let tmp = Scratch::new("containers");
        let host = tmp.0.join("passwd");
        write(&host, "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/:/bin/sh\nsvc:x:999:999::/:/bin/sh\n", 1);
        let proc = tmp.0.join("proc");
        // pid 10: a container whose image names uid 999 and 1000 differently.
        write(&proc.join("10/root/etc/passwd"), "root:x:0:0::/root:/bin/sh\nappuser:x:1000:1000::/app:/bin/sh\n", 1);
        // pid 11: rootless, host uid 100999 is 999 inside.
        write(&proc.join("11/root/etc/passwd"), "postgres:x:999:999::/var/lib/postgresql:/bin/sh\n", 1);
        write(&proc.join("11/uid_map"), "0 1000 1\n1 100000 65536\n", 1);
        // pid 12: an image whose /etc/passwd points at a file outside it.
        fs::create_dir_all(proc.join("12/root/etc")).unwrap();
        write(&tmp.0.join("outside"), "mallory:x:1000:1000::/:/bin/sh\n", 1);
        std::os::unix::fs::symlink(tmp.0.join("outside"), proc.join("12/root/etc/passwd")).unwrap();
        // pid 13: shares our root, so the host file answers.
        fs::create_dir_all(proc.join("13")).unwrap();
        std::os::unix::fs::symlink("/", proc.join("13/root")).unwrap();

        let mut users = Users::with_paths(host, proc);
        let now = Instant::now();
        assert_eq!(users.name_at(10, 1000, now).as_deref(), Some("appuser"));
        // Not in the image: the host's name for the same kernel uid.
        assert_eq!(users.name_at(10, 999, now).as_deref(), Some("svc"));
        assert_eq!(users.name_at(11, 100998, now).as_deref(), Some("postgres"));
        // Host uid 1000 is root inside pid 11, whose image has no root entry: the host names its owner.
        assert_eq!(users.name_at(11, 1000, now).as_deref(), Some("alice"));
        assert_eq!(users.name_at(12, 1000, now).as_deref(), Some("alice"));
        assert_eq!(users.name_at(13, 1000, now).as_deref(), Some("alice"));
        // No such process: the host file.
        assert_eq!(users.name_at(99, 0, now).as_deref(), Some("root"));
        assert_eq!(users.roots.len(), 3);
    }

    #[test]
    fn our_own_process_reads_the_host_file() {
        let want = fs::read_to_string("/etc/passwd").ok().and_then(|t| parse_passwd(&t).remove(&0));
        assert_eq!(Users::new().name(std::process::id(), 0), want);
    }
}
