//! Token counting fallback (tiktoken) for calls whose response reports no usage.
