//! Privileged end-to-end test harness for tokentap.
//!
//! A shared agent per test binary ([`agent::agent`]), a fake LLM HTTPS
//! server per test ([`server::LlmServer`]), real SDK / curl clients
//! ([`clients`]), and checks of the agent's usage log against the server's
//! ground truth ([`expect`], [`records`]) — without ever printing payloads.
//!
//! Environment:
//! - `TOKENTAP_BIN`: agent binary (default `<workspace>/target/debug/tokentap`).
//! - `TOKENTAP_PYTHON`: interpreter with `fixtures/requirements.txt`
//!   installed (default `python3`).
//! - `TOKENTAP_REQUIRE_BPF=1`: fail instead of skipping without root + BTF.
//! - `TOKENTAP_KEEP_TMP=1`: keep per-test temp dirs (they hold payloads).
//!
//! Run: `python3 -m venv target/e2e-venv && target/e2e-venv/bin/pip install
//! -r tests/fixtures/requirements.txt`, then as root
//! `TOKENTAP_PYTHON=target/e2e-venv/bin/python cargo test -p tokentap-tests`.

pub mod agent;
pub mod case;
pub mod certs;
pub mod clients;
pub mod collector;
pub mod enforce;
pub mod env;
pub mod expect;
pub mod fleet;
pub mod go;
pub mod http2;
pub mod invoice_check;
pub mod kube;
pub mod ledger;
pub mod metered;
pub mod node;
pub mod plain;
pub mod quota;
pub mod raw_tls;
pub mod records;
pub mod redis;
pub mod report;
pub mod rust_client;
pub mod server;
pub mod shortlived;
pub mod tmux;

pub use agent::{agent, Agent};
pub use case::Case;
pub use certs::{certs, Certs};
pub use clients::ClientRun;
pub use env::require_bpf;
pub use expect::{check_record, Expected, Tokens};
pub use records::{assert_private, wait_records};
pub use server::{LlmServer, ServerEntry, ServerOpts};
