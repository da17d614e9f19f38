//! Pure parsing stages: bytes in, typed values out. Nothing here touches the kernel, the
//! network or the file system, so every stage is tested from byte fixtures without root.
//!
//! Privacy: the values built here hold plaintext (headers, prompts) only in memory; error
//! types never carry payload bytes, only positions, lengths and reasons.

pub mod http;
pub mod http2;
pub mod llm;
pub mod tokens;
