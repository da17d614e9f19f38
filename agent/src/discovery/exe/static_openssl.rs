//! OpenSSL (or BoringSSL with OpenSSL's names) linked statically into an executable that
//! keeps its symbols, like `/usr/bin/node`: the same probes as for libssl, on the executable.
use super::{ExeProbes, Executable};
use crate::capture::{probes, Capture, CaptureError, TlsLibrary};

pub fn attach(capture: &mut Capture, exe: &Executable) -> Result<Option<ExeProbes>, CaptureError> {
    if !(exe.defines("SSL_write") && exe.defines("SSL_read")) {
        return Ok(None);
    }
    let (probes, missing_optional) = capture.attach_library(&exe.path, probes::OPENSSL)?;
    Ok(Some(ExeProbes { library: TlsLibrary::OpenSsl, probes, missing_optional }))
}
