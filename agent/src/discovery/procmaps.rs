//! Reading which TLS libraries a process has mapped. Pure parsing, tested from fixtures.
use std::path::{Path, PathBuf};

/// A TLS library probed by file, told apart by its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKind {
    /// OpenSSL's libssl (`libssl.so`, `libssl.so.3`, `libssl.so.1.1`), not NSS's `libssl3.so`.
    OpenSsl,
    /// `libgnutls.so.30`, not its wrappers (`libgnutls-openssl.so`, `libgnutls-dane.so`).
    GnuTls,
}

/// Which TLS library `path` names, if any.
pub fn library_kind(path: &Path) -> Option<LibraryKind> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with("libssl.so") {
        Some(LibraryKind::OpenSsl)
    } else if name.starts_with("libgnutls.so") {
        Some(LibraryKind::GnuTls)
    } else {
        None
    }
}

/// True for a file name of a TLS library probed by file (see [`library_kind`]).
pub fn is_tls_library(path: &Path) -> bool {
    library_kind(path).is_some()
}

/// Distinct TLS library paths in a `/proc/PID/maps` text, as the process sees them (its mount
/// namespace). Deleted mappings (` (deleted)`) are skipped: the file can no longer be opened.
pub fn tls_library_paths(maps: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname — the path is everything after the 5th field.
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            match rest.find(char::is_whitespace) {
                Some(i) => rest = &rest[i..],
                None => {
                    rest = "";
                    break;
                }
            }
        }
        let path = rest.trim();
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let path = PathBuf::from(path);
        if is_tls_library(&path) && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// The path through which the agent (in the host's mount namespace) reaches a file that
/// process `pid` names `path`: via `/proc/PID/root` (containers) or `/proc/PID/cwd`.
pub fn host_path(pid: u32, path: &Path) -> PathBuf {
    if path.is_absolute() {
        let rel = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{pid}/root")).join(rel)
    } else {
        PathBuf::from(format!("/proc/{pid}/cwd")).join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fe:01 1311033                    /usr/bin/python3.11
7f91f9926000-7f91f9942000 r--p 00000000 fe:01 1321017                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f91f9942000-7f91f99a0000 r-xp 0001c000 fe:01 1321017                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f91f9400000-7f91f9600000 r--p 00000000 fe:01 1321016                    /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f91f9700000-7f91f9710000 r--p 00000000 fe:01 1321099                    /usr/lib/x86_64-linux-gnu/libssl3.so
7f91f9800000-7f91f9810000 r-xp 00000000 00:2a 99                         /opt/app/lib/libssl.so.1.1 (deleted)
7f91f9900000-7f91f9910000 r-xp 00000000 00:2a 98                         /opt/my app/libssl.so.1.1
7f91f9a00000-7f91f9a10000 r-xp 00000000 fe:01 1321200                    /usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3
7f91f9b00000-7f91f9b10000 r-xp 00000000 fe:01 1321201                    /usr/lib/x86_64-linux-gnu/libgnutls-openssl.so.27
7ffd1c5e1000-7ffd1c602000 rw-p 00000000 00:00 0                          [stack]
7ffd1c602000-7ffd1c604000 r-xp 00000000 00:00 0
";

    #[test]
    fn finds_each_tls_library_once() {
        assert_eq!(
            tls_library_paths(MAPS),
            vec![
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/opt/my app/libssl.so.1.1"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"),
            ]
        );
        assert!(tls_library_paths("garbage\n\n  \n").is_empty());
    }

    #[test]
    fn library_kind_by_file_name() {
        let kind = |p: &str| library_kind(Path::new(p));
        assert_eq!(kind("/usr/lib/libssl.so.3"), Some(LibraryKind::OpenSsl));
        assert_eq!(kind("libssl.so"), Some(LibraryKind::OpenSsl));
        assert_eq!(kind("/usr/lib/x86_64-linux-gnu/libgnutls.so.30"), Some(LibraryKind::GnuTls));
        assert_eq!(kind("/usr/lib/libgnutls-openssl.so.27"), None);
        assert_eq!(kind("/usr/lib/libgnutls-dane.so.0"), None);
        assert_eq!(kind("/usr/lib/libssl3.so"), None);
        assert_eq!(kind("/usr/lib/libgnutls.so.30/"), Some(LibraryKind::GnuTls));
        assert_eq!(kind("/"), None);
    }

    #[test]
    fn host_paths_go_through_proc() {
        assert_eq!(host_path(7, Path::new("/usr/lib/libssl.so.3")), PathBuf::from("/proc/7/root/usr/lib/libssl.so.3"));
        assert_eq!(host_path(7, Path::new("lib/libssl.so.3")), PathBuf::from("/proc/7/cwd/lib/libssl.so.3"));
    }
}
