//! TODO(issue 7): boringssl probes on executables.
use super::{ExeProbes, Executable};
use crate::capture::{Capture, CaptureError};

pub fn attach(_capture: &mut Capture, _exe: &Executable) -> Result<Option<ExeProbes>, CaptureError> {
    Ok(None)
}
