//! Entitlements enforced in real time (docs/enforcement.md).
pub mod cluster;
