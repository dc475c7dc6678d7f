//! Hosts FailCore's examples and cross-crate tests; not published.
