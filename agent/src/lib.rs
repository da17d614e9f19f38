//! tokentap: meters LLM API traffic at the TLS library, with eBPF.
//!
//! Stages, each a module with a small typed interface: `capture` (kernel boundary) →
//! `streams` (per-connection reassembly) → `tokentap_proto` (HTTP, provider APIs, tokens) →
//! `usage` (records) → `output`. `discovery` finds the libraries to probe; `identity` says who
//! a process is. Plaintext never leaves these stages: records hold counts and labels only.
pub mod app;
pub mod attribution;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod completeness;
pub mod config;
pub mod discovery;
pub mod enforce;
pub mod errors;
pub mod explain;
pub mod export;
pub mod identity;
pub mod ledger;
pub mod mapping_source;
pub mod money;
pub mod output;
pub mod pricing;
pub mod privileges;
pub mod report;
pub mod stats;
pub mod streams;
pub(crate) mod toml_source;
pub mod top;
pub mod usage;
pub mod watched_file;
