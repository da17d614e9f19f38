//! Entitlement enforcement: budgets, verdicts in the kernel, actions, and their status.
pub mod status;
