//! OpenSSL (or BoringSSL with OpenSSL's names) linked statically into an executable that
//! keeps its symbols, like `/usr/bin/node`: the same probes as for libssl, on the executable.
//!
//! Attached at file offsets resolved in one pass over the symbol tables, through the agent's
//! own descriptor of the file: the first process of a new executable is inspected at its
//! exec, and node sends its first request within a few hundred milliseconds of starting.
use aya::programs::uprobe::UProbeAttachLocation;

use super::{symbols, ExeProbes, Executable};
use crate::capture::{probes, Capture, CaptureError, TlsLibrary};

pub fn attach(capture: &mut Capture, exe: &Executable) -> Result<Option<ExeProbes>, CaptureError> {
    let mut names: Vec<&'static str> = probes::OPENSSL.iter().map(|s| s.symbol).collect();
    names.sort_unstable();
    names.dedup();
    let offsets = symbols::file_offsets(exe, &names);
    if !(offsets.contains_key("SSL_write") && offsets.contains_key("SSL_read")) {
        return Ok(None);
    }
    let path = exe.probe_path();
    let mut attached = 0;
    let mut missing_optional = Vec::new();
    for spec in probes::OPENSSL {
        let Some(&offset) = offsets.get(spec.symbol) else {
            if !missing_optional.contains(&spec.symbol) {
                missing_optional.push(spec.symbol);
            }
            continue;
        };
        match capture.attach_at(spec.program, UProbeAttachLocation::AbsoluteOffset(offset), &path) {
            Ok(()) => attached += 1,
            Err(e) if spec.required => return Err(e),
            Err(e) => {
                tracing::debug!(exe = %exe.path.display(), symbol = spec.symbol, error = %e, "optional probe not attached");
                if !missing_optional.contains(&spec.symbol) {
                    missing_optional.push(spec.symbol);
                }
            }
        }
    }
    Ok(Some(ExeProbes { library: TlsLibrary::OpenSsl, probes: attached, missing_optional }))
}
