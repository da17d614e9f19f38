//! Entitlements enforced in real time (docs/enforcement.md): the policy, its windows, the
//! budgets with in-flight reservations, their rebuild from the ledger, and the glue from the
//! agent's events to the kernel's verdict maps.
pub mod budget;
pub mod policy;
pub mod quota_cli;
pub mod status;
pub mod window;
