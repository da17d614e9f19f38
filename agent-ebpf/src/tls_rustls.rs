//! TODO(issue 7)
