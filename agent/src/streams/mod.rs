//! Per-connection reassembly: capture chunks in, complete HTTP exchanges out (and, for
//! enforcement, calls as they start and stream).
pub mod calls;
pub mod conn;
pub mod cursor;
pub mod endpoint;
pub mod h2;
pub mod proto;
pub mod tracker;

pub use calls::{CallKey, Estimate, RequestStart, StreamProgress};
pub use conn::Exchange;
pub use endpoint::Endpoint;
pub use tracker::{Origin, Output, TrackedExchange, Tracker, TrackerConfig, Verdict};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod h2_tests;

#[cfg(test)]
mod calls_tests;
