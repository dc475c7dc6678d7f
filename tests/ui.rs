//! Compile-time behaviour of `#[failcore::tool]`: one failing case per rule, each with the error it must
//! give (spanned on the token to change), and cases that must compile.

#[test]
fn macro_rules_give_spanned_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
