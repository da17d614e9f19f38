//! Provider API recognition and usage extraction.
