//! Parsing `#[failcore::tool(...)]` arguments.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    pub fn at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }
    pub fn into_result(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

pub enum PolicyArg {
    Named(LitStr),
    Expr(Box<Expr>),
}

/// A string argument restricted to a set of values.
pub struct Choice {
    pub value: String,
}

#[derive(Default)]
pub struct ToolArgs {
    pub policy: Option<PolicyArg>,
    pub name: Option<LitStr>,
    pub version: Option<LitStr>,
    pub effect: Option<Choice>,
    pub skip: Vec<Ident>,
    pub redact: Vec<Ident>,
    /// `redact(args = "/config/password")`: JSON pointers into the arguments (first segment: an argument).
    pub redact_args: Vec<LitStr>,
    /// `redact(output = "/token")`: JSON pointers into the output.
    pub redact_output: Vec<LitStr>,
    pub replay: Option<Choice>,
    pub output: Option<Choice>,
    /// `recovery = "retry" | "block"`: what a resume does with a call that was in flight at a crash.
    pub recovery: Option<Choice>,
    /// `reconcile = path`: asks whether an in-flight call took effect before it runs again.
    pub reconcile: Option<Path>,
    pub krate: Option<Path>,
}

pub const EFFECTS: &[&str] = &["pure", "read", "write", "network", "exec"];
pub const REPLAYS: &[&str] = &["auto", "never"];
pub const OUTPUTS: &[&str] = &["json", "text"];
pub const RECOVERIES: &[&str] = &["retry", "block"];
const ARGS: &str =
    "policy, name, version, effect, skip, redact, replay, output, recovery, reconcile, crate";

/// One `key = value` or `key(a, b)` item.
enum Item {
    Value(Ident, Expr),
    List(Ident, Punctuated<ListItem, Token![,]>),
}

/// One item of a list: an argument name, or `args = "/path"` / `output = "/path"` (in `redact`).
enum ListItem {
    Name(Ident),
    Path(Ident, LitStr),
}

impl Parse for ListItem {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let path: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("`{name} = ...` takes a JSON pointer string: `{name} = \"/field\"`"),
                )
            })?;
            Ok(ListItem::Path(name, path))
        } else {
            Ok(ListItem::Name(name))
        }
    }
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `crate` is a keyword; accept it as an argument name.
        let key = if input.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            Ident::new("crate", kw.span)
        } else {
            input.call(syn::ext::IdentExt::parse_any)?
        };
        if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            Ok(Item::List(
                key,
                // Names are read with `parse_any`: `skip(self)` names the receiver.
                content.parse_terminated(ListItem::parse, Token![,])?,
            ))
        } else {
            input.parse::<Token![=]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected `{key} = ...` or `{key}(...)` after `{key}`"),
                )
            })?;
            Ok(Item::Value(key, input.parse()?))
        }
    }
}

impl ToolArgs {
    pub fn parse(tokens: TokenStream, errors: &mut Errors) -> ToolArgs {
        let mut args = ToolArgs::default();
        let items = match Punctuated::<Item, Token![,]>::parse_terminated.parse2(tokens) {
            Ok(items) => items,
            Err(e) => {
                errors.push(e);
                return args;
            }
        };
        let mut seen: Vec<String> = Vec::new();
        for item in items {
            let key = match &item {
                Item::Value(k, _) | Item::List(k, _) => k.clone(),
            };
            let name = key.to_string();
            if seen.contains(&name) {
                errors.at(
                    key.span(),
                    format!("duplicate argument `{name}`: give it once"),
                );
                continue;
            }
            seen.push(name.clone());
            match (name.as_str(), item) {
                ("policy", Item::Value(_, expr)) => {
                    args.policy = Some(match expr {
                        Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) => PolicyArg::Named(s),
                        other => PolicyArg::Expr(Box::new(other)),
                    })
                }
                ("name", Item::Value(_, e)) => args.name = lit_str(&e, "name", errors),
                ("version", Item::Value(_, e)) => args.version = lit_str(&e, "version", errors),
                ("effect", Item::Value(_, e)) => {
                    args.effect = choice(&e, "effect", EFFECTS, errors)
                }
                ("replay", Item::Value(_, e)) => {
                    args.replay = choice(&e, "replay", REPLAYS, errors)
                }
                ("output", Item::Value(_, e)) => {
                    args.output = choice(&e, "output", OUTPUTS, errors)
                }
                ("recovery", Item::Value(_, e)) => {
                    args.recovery = choice(&e, "recovery", RECOVERIES, errors)
                }
                ("reconcile", Item::Value(_, e)) => match e {
                    Expr::Path(p) => args.reconcile = Some(p.path),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "`reconcile` takes the path of an async function: `reconcile = did_it_land`",
                    )),
                },
                ("crate", Item::Value(_, e)) => match e {
                    Expr::Path(p) => args.krate = Some(p.path),
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => match s.parse::<Path>() {
                        Ok(p) => args.krate = Some(p),
                        Err(_) => {
                            errors.at(s.span(), "`crate` takes a path: `crate = my_failcore`")
                        }
                    },
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "`crate` takes a path: `crate = my_failcore`",
                    )),
                },
                ("skip", Item::List(_, list)) => {
                    for item in list {
                        match item {
                            ListItem::Name(i) => args.skip.push(i),
                            ListItem::Path(k, _) => errors.at(
                                k.span(),
                                "`skip` takes argument names: `skip(a, b)`; paths go in \
                                 `redact(args = \"/a/field\")`",
                            ),
                        }
                    }
                }
                ("redact", Item::List(_, list)) => {
                    for item in list {
                        match item {
                            ListItem::Name(i) => args.redact.push(i),
                            ListItem::Path(k, p) if k == "args" => args.redact_args.push(p),
                            ListItem::Path(k, p) if k == "output" => args.redact_output.push(p),
                            ListItem::Path(k, _) => errors.at(
                                k.span(),
                                format!(
                                    "unknown `redact` path `{k}`: write `args = \"/arg/field\"` or \
                                     `output = \"/field\"`"
                                ),
                            ),
                        }
                    }
                }
                ("skip" | "redact", Item::Value(..)) => errors.at(
                    key.span(),
                    format!("`{name}` takes a list of arguments: `{name}(a, b)`"),
                ),
                (_, Item::List(..))
                    if [
                        "policy",
                        "name",
                        "version",
                        "effect",
                        "replay",
                        "output",
                        "recovery",
                        "reconcile",
                        "crate",
                    ]
                    .contains(&name.as_str()) =>
                {
                    errors.at(
                        key.span(),
                        format!("`{name}` takes a value: `{name} = ...`"),
                    )
                }
                _ => errors.at(
                    key.span(),
                    format!("unknown argument `{name}`: expected one of {ARGS}"),
                ),
            }
        }
        if let (Some(_), Some(path)) = (&args.recovery, &args.reconcile) {
            errors.push(syn::Error::new_spanned(
                path,
                "`reconcile` is a recovery of its own: give `recovery = ...` or `reconcile = ...`, not both",
            ));
        }
        args
    }
}

fn lit_str(e: &Expr, what: &str, errors: &mut Errors) -> Option<LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) if !s.value().is_empty() => Some(s.clone()),
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                format!("`{what}` takes a non-empty string: `{what} = \"...\"`"),
            ));
            None
        }
    }
}

fn choice(e: &Expr, what: &str, allowed: &[&str], errors: &mut Errors) -> Option<Choice> {
    let expected = allowed
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) if allowed.contains(&s.value().as_str()) => Some(Choice { value: s.value() }),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            errors.at(
                s.span(),
                format!(
                    "unknown {what} \"{}\": expected one of {expected}",
                    s.value()
                ),
            );
            None
        }
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                format!("`{what}` takes a string: one of {expected}"),
            ));
            None
        }
    }
}
