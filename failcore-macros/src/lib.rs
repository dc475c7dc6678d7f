//! The `#[failcore::tool]` attribute. Use it through the `failcore` crate, which documents it.
//!
//! `attr.rs` parses the attribute's arguments, `expand.rs` checks the function and generates the thin
//! wrapper; every error found is collected and reported at once, spanned on the token to change.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Turns an `async fn` returning `Result<T, E>` into a FailCore tool: fingerprinted, checked against its
/// policy, replayed when a resumed run has its output, and recorded in the trace.
///
/// See the documentation of `failcore::tool` for the arguments.
#[proc_macro_attribute]
pub fn tool(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::tool(args.into(), item.into()).into()
}
