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

/// What the attribute generates for a few representative tools, formatted and pinned (`src/snapshots`):
/// a change to the expansion shows as a diff to review. Update with `INSTA_UPDATE=always`, or
/// `cargo insta review`.
#[cfg(test)]
mod expansion {
    use quote::quote;

    fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        let out = crate::expand::tool(args, item);
        let file = syn::parse2::<syn::File>(out).expect("the expansion parses as Rust");
        prettyplease::unparse(&file)
    }

    #[test]
    fn a_pure_function() {
        insta::assert_snapshot!(expand(
            quote!(effect = "pure"),
            quote! {
                /// Adds.
                async fn add(a: i64, b: i64) -> Result<i64, Error> {
                    Ok(a + b)
                }
            },
        ));
    }

    #[test]
    fn a_write_with_a_policy_a_redacted_and_a_skipped_argument() {
        insta::assert_snapshot!(expand(
            quote!(
                policy = "fs_safe",
                effect = "write",
                redact(token),
                skip(client)
            ),
            quote! {
                async fn upload(client: &Client, path: String, token: String) -> Result<u64, ToolError> {
                    client.put(&path, &token).await
                }
            },
        ));
    }

    #[test]
    fn a_method_with_a_reconcile_function() {
        insta::assert_snapshot!(expand(
            quote!(effect = "write", reconcile = Self::sent, skip(self)),
            quote! {
                pub async fn send(&self, to: String) -> Result<MessageId, ToolError> {
                    self.mail.send(&to).await
                }
            },
        ));
    }

    #[test]
    fn an_error_is_spanned_and_the_function_still_emitted() {
        insta::assert_snapshot!(expand(
            quote!(effect = "sometimes"),
            quote! {
                fn not_async(a: u8) -> Result<u8, Error> { Ok(a) }
            },
        ));
    }
}
