//! What the engine decides, as plain values: kernel verdicts to install and actions to take.
//! The engine computes them without touching the kernel (so every decision is unit-tested);
//! `Enforcer` carries them out through the kernel maps and the actuators.
use crate::capture::event::ConnId;

/// Whom a kernel verdict applies to (the kernel's `Target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Who {
    Cgroup(u64),
    Process(u32),
}

/// A kernel verdict (the kernel's `Mode`), ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// An explicit "never act": a process entry that overrides its cgroup's verdict.
    Free,
    /// Hold every request for approval.
    Gate,
    /// Exhausted, action signal: the signal at the next write on an AI connection.
    Signal(i32),
    /// Exhausted, action deny or cut: writes held and refused, new AI connections refused.
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Install a verdict.
    Set(Who, Verdict),
    /// Remove a verdict.
    Clear(Who),
    /// Let the held request on this connection through.
    Pass(ConnId),
    /// Destroy the process's AI connections (deny at a hold, or entering DENY).
    DestroyProcess(u32),
    /// Destroy the AI connections of every process in the cgroup (entering DENY).
    DestroyCgroup(u64),
    /// Destroy one connection (a stream cut past the limit).
    DestroyConn(ConnId),
    /// Send a signal (a signal verdict at a hold).
    Signal(u32, i32),
    /// SIGCONT a held process: always the last step of a hold's decision.
    Resume(u32),
}
