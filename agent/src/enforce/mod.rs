//! Entitlements enforced in real time (docs/enforcement.md): the policy, its windows, the
//! budgets with in-flight reservations, their rebuild from the ledger, the decisions
//! (`engine`), and the kernel side: verdict maps (`kernel`) and actuators (`actuate`).
pub mod actuate;
pub mod backstop;
pub mod budget;
pub mod cgroups;
pub mod cluster;
pub mod enforcer;
pub mod engine;
pub mod kernel;
pub mod labels;
pub mod policy;
pub mod policy_source;
pub mod quota_cli;
pub mod seed;
pub mod sock_diag;
pub mod sockets;
pub mod status;
pub mod status_file;
pub mod steps;
pub mod targets;
pub mod window;
