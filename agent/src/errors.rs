//! Error text for people.

/// `error: cause: cause`: the outermost message alone often says little ("error sending
/// request", "failed to attach") while the causes name the errno or the refused address.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
