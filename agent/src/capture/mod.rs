//! The kernel boundary: loading probes, reading their ring buffers, decoding records.
pub mod event;
pub mod loader;
pub mod probes;

pub use event::{
    decode_data, decode_proc, Acted, ConnId, DataChunk, DataRecord, Direction, HeldMode, Hold, ProcRecord, TlsLibrary,
};
pub use loader::{Capture, CaptureError, KernelCounters, LoadOptions, Rings};
