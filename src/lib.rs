//! Hosts FailCore's examples and cross-crate tests; not published.

// The README's quick start is compiled as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
