//! Where usage goes: JSON lines or a live summary.
pub mod jsonl;
pub mod summary;
