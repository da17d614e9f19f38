//! Executables that carry their own TLS stack: OpenSSL/BoringSSL linked in statically, Go's
//! `crypto/tls`, rustls. Each executable file is inspected once (per device and inode), for
//! every running process at start and for each new program at exec; each stack's module gets
//! the parsed image and attaches what it recognises.
pub mod boringssl;
pub mod go;
pub mod runtimes;
pub mod rustls;
pub mod rustls_offset;
pub mod static_openssl;
pub mod symbols;
pub mod unprobed;

use std::path::{Path, PathBuf};

use crate::capture::{Capture, CaptureError, TlsLibrary};

/// An executable file mapped into memory and parsed as ELF.
pub struct Executable {
    /// How the agent reaches the file (`/proc/PID/exe` or a host path).
    pub path: PathBuf,
    map: memmap2::Mmap,
    /// Kept open so that [`Executable::probe_path`] names this very file for as long as the
    /// agent inspects it, even after the process it was found through exits.
    file: std::fs::File,
}

impl Executable {
    pub fn open(path: &Path) -> std::io::Result<Executable> {
        let file = std::fs::File::open(path)?;
        // SAFETY: read-only private mapping; a file rewritten underneath only yields wrong
        // bytes to a parser that validates everything it reads, never undefined behaviour in
        // safe code that indexes checked slices.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Executable { path: path.to_path_buf(), map, file })
    }

    /// The path to attach probes through: the agent's own descriptor of the file. A uprobe
    /// lives on the inode, but the kernel resolves the path at attach time, and
    /// `/proc/PID/root/...` of a short-lived process (the first `node` run after the agent
    /// started) vanishes while the probes are still being attached.
    pub fn probe_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The ELF image, or `None` for anything else (scripts, other formats).
    pub fn elf(&self) -> Option<object::File<'_>> {
        let file = object::File::parse(self.bytes()).ok()?;
        matches!(file.format(), object::BinaryFormat::Elf).then_some(file)
    }
}

/// What one stack's module attached to an executable.
#[derive(Debug, Clone)]
pub struct ExeProbes {
    pub library: TlsLibrary,
    pub probes: usize,
    pub missing_optional: Vec<&'static str>,
}

/// Runs every stack's module over one executable; returns what attached.
pub fn attach_all(capture: &mut Capture, exe: &Executable) -> Vec<Result<ExeProbes, CaptureError>> {
    let attempts = [static_openssl::attach, go::attach, rustls::attach, boringssl::attach];
    attempts.iter().filter_map(|attach| attach(capture, exe).transpose()).collect()
}
