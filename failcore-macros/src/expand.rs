//! Checking the annotated function and generating the thin wrapper around it.
//!
//! The wrapper keeps the user's signature, attributes and body tokens (with their spans) and adds:
//! a `static` descriptor registered through inventory, one synchronous call that serializes the
//! arguments, one awaited call into the runtime, and the body moved into an `async` block that the runtime
//! runs (or does not run, when the call is blocked or replayed). Everything generic is confined to
//! `__private::run`, a small function; the lifecycle itself is not monomorphized per tool.

use crate::attr::{Errors, PolicyArg, ToolArgs};
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, ItemFn, Pat, Path, ReturnType, Type};

struct Param {
    ident: syn::Ident,
    ty: Type,
    role: Role,
    /// The method's receiver (`self`), fingerprinted unless the tool says `skip(self)`.
    receiver: bool,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Role {
    Fingerprinted,
    Redacted,
    Skipped,
}

pub fn tool(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = ToolArgs::parse(args, &mut errors);
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            // Emit the tokens anyway so that the IDE still sees the function.
            let e = e.into_compile_error();
            return quote! { #item #e };
        }
    };
    let params = check(&func, &args, &mut errors);
    match errors.into_result() {
        Ok(()) => generate(&func, &args, &params),
        Err(e) => {
            let e = e.into_compile_error();
            quote! { #func #e }
        }
    }
}

fn check(func: &ItemFn, args: &ToolArgs, errors: &mut Errors) -> Vec<Param> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            "`#[failcore::tool]` needs an `async fn`: write `async fn` here",
        );
    }
    if let Some(c) = &sig.constness {
        errors.at(c.span, "a tool cannot be a `const fn`: remove `const`");
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new_spanned(v, "a tool cannot be variadic"));
    }
    for g in &sig.generics.params {
        match g {
            GenericParam::Lifetime(_) => {}
            other => errors.push(syn::Error::new_spanned(
                other,
                "a tool cannot be generic: it is registered at one address and called by name; \
                 write a non-generic function that calls your generic one",
            )),
        }
    }
    match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => {}
        ReturnType::Type(_, ty) => errors.push(syn::Error::new_spanned(
            ty,
            "a tool returns `Result<T, E>` (with `E: From<failcore::Error>`, so that a blocked call is an `Err`): \
             write `-> Result<_, _>` here",
        )),
        ReturnType::Default => errors.at(
            sig.paren_token.span.close(),
            "a tool returns `Result<T, E>` (with `E: From<failcore::Error>`): add `-> Result<T, E>` after the arguments",
        ),
    }

    let mut params = Vec::new();
    for input in &sig.inputs {
        let pt = match input {
            FnArg::Receiver(r) => {
                params.push(Param {
                    ident: syn::Ident::new("self", r.self_token.span),
                    ty: (*r.ty).clone(),
                    role: Role::Fingerprinted,
                    receiver: true,
                });
                continue;
            }
            FnArg::Typed(pt) => pt,
        };
        let ident = match pt.pat.as_ref() {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "tool arguments need plain names (they are the keys of the recorded arguments): \
                     write `name: Type` and destructure in the body",
                ));
                continue;
            }
        };
        if let Some(span) = ident_span(&pt.ty, "impl") {
            errors.at(
                span,
                "`impl Trait` makes a tool generic, and a tool cannot be generic: use a concrete type",
            );
        }
        if let Some(span) = ident_span(&pt.ty, "HashSet") {
            errors.at(
                span,
                "a `HashSet` argument iterates in a different order in every process, so the call would \
                 not match its recorded success on resume: use a `BTreeSet` (or a sorted `Vec`), or \
                 `skip` the argument",
            );
        }
        params.push(Param {
            ident,
            ty: (*pt.ty).clone(),
            role: Role::Fingerprinted,
            receiver: false,
        });
    }

    let names: Vec<String> = params
        .iter()
        .filter(|p| !p.receiver)
        .map(|p| p.ident.to_string())
        .collect();
    let listed = if names.is_empty() {
        "the function has no arguments".to_owned()
    } else {
        format!(
            "arguments are {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    for (list, role, what) in [
        (&args.skip, Role::Skipped, "skip"),
        (&args.redact, Role::Redacted, "redact"),
    ] {
        for ident in list {
            match params.iter_mut().find(|p| p.ident == *ident) {
                Some(p) if p.role != Role::Fingerprinted => errors.at(
                    ident.span(),
                    format!("`{ident}` is named twice in `skip`/`redact`: an argument is either skipped or redacted"),
                ),
                Some(p) => p.role = role,
                None if ident == "self" => errors.at(
                    ident.span(),
                    format!("`{what}(self)`: this function is not a method, it has no `self`"),
                ),
                None => errors.at(ident.span(), format!("`{what}({ident})`: no argument named `{ident}`; {listed}")),
            }
        }
    }
    check_redact_paths(args, &params, &listed, errors);
    params
}

/// `redact(args = "...", output = "...")`: each a JSON pointer; an argument path starts with the name of
/// an argument that is recorded (not skipped).
fn check_redact_paths(args: &ToolArgs, params: &[Param], listed: &str, errors: &mut Errors) {
    for (lit, is_args) in args
        .redact_args
        .iter()
        .map(|l| (l, true))
        .chain(args.redact_output.iter().map(|l| (l, false)))
    {
        let path = lit.value();
        let segments = match pointer_segments(&path) {
            Ok(s) => s,
            Err(why) => {
                errors.at(lit.span(), why);
                continue;
            }
        };
        if !is_args {
            continue;
        }
        let Some(first) = segments.first() else {
            errors.at(
                lit.span(),
                "`args = \"\"` would redact every argument: name one, as in `args = \"/config/password\"`",
            );
            continue;
        };
        match params.iter().find(|p| p.ident == first.as_str()) {
            Some(p) if p.role == Role::Skipped => errors.at(
                lit.span(),
                format!(
                    "`{first}` is skipped, so it is not recorded: there is nothing to redact in it"
                ),
            ),
            Some(_) => {}
            None if first == "*" => {}
            None => errors.at(
                lit.span(),
                format!("`args = \"{path}\"`: no argument named `{first}`; {listed}"),
            ),
        }
    }
}

/// The segments of a JSON pointer (`""` or `/a/b`, `~0` for `~` and `~1` for `/`).
fn pointer_segments(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!(
            "`{path}` is not a JSON pointer: start it with `/`, as in `/config/password`"
        ));
    };
    rest.split('/')
        .map(|seg| {
            let mut out = String::new();
            let mut chars = seg.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "`{path}`: in a JSON pointer `~` is written `~0` and `/` inside a name `~1`"
                        ))
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Paren(p) => returns_result(&p.elem),
        Type::Group(g) => returns_result(&g.elem),
        _ => false,
    }
}

/// Where a type's tokens hold the identifier `name` (a keyword such as `impl` included), at any depth.
fn ident_span(ty: &Type, name: &str) -> Option<Span> {
    fn walk(tokens: TokenStream, name: &str) -> Option<Span> {
        tokens.into_iter().find_map(|tt| match tt {
            TokenTree::Ident(i) if i == name => Some(i.span()),
            TokenTree::Group(g) => walk(g.stream(), name),
            _ => None,
        })
    }
    walk(quote!(#ty), name)
}

/// Whether a type mentions a reference or a lifetime anywhere.
fn borrows(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            TokenTree::Punct(p) => p.as_char() == '&' || p.as_char() == '\'',
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(quote!(#ty))
}

/// `PathBuf`, `Path`, `Utf8PathBuf`, `Utf8Path`, or a reference to one: a path argument for fs policies.
fn is_path_type(ty: &Type) -> bool {
    match ty {
        Type::Reference(r) => is_path_type(&r.elem),
        Type::Path(p) => p.path.segments.last().is_some_and(|s| {
            ["PathBuf", "Path", "Utf8PathBuf", "Utf8Path"]
                .iter()
                .any(|n| s.ident == n)
        }),
        _ => false,
    }
}

fn doc_text(func: &ItemFn) -> String {
    let mut lines = Vec::new();
    for attr in &func.attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
            {
                let v = s.value();
                lines.push(v.strip_prefix(' ').unwrap_or(&v).to_owned());
            }
        }
    }
    lines.join("\n").trim().to_owned()
}

fn generate(func: &ItemFn, args: &ToolArgs, params: &[Param]) -> TokenStream {
    let k: Path = args
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::failcore));
    let p = quote!(#k::__private);
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let fn_name = &sig.ident;
    let name = args
        .name
        .as_ref()
        .map_or_else(|| fn_name.to_string(), |n| n.value());
    let version = args
        .version
        .as_ref()
        .map_or_else(String::new, |v| v.value());
    let description = doc_text(func);
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => ty.as_ref().clone(),
        ReturnType::Default => unreachable_return(),
    };

    let effect = format_ident!(
        "{}",
        match args.effect.as_ref().map(|c| c.value.as_str()) {
            Some("pure") => "Pure",
            Some("read") => "Read",
            Some("write") => "Write",
            Some("network") => "Network",
            Some("exec") => "Exec",
            _ => "Unspecified",
        }
    );
    let replay = args.replay.as_ref().is_none_or(|c| c.value == "auto");
    let output = format_ident!(
        "{}",
        match args.output.as_ref().map(|c| c.value.as_str()) {
            Some("json") => "Json",
            Some("text") => "Text",
            _ => "Any",
        }
    );

    let (policy_fn, policy) = match &args.policy {
        None => (quote!(), quote!(#p::PolicySource::None)),
        Some(PolicyArg::Named(s)) => (quote!(), quote!(#p::PolicySource::Named(#s))),
        Some(PolicyArg::Expr(e)) => (
            quote_spanned! {e.span()=>
                fn __failcore_policy() -> #p::PolicyRef {
                    #p::into_policy(#e)
                }
            },
            quote!(#p::PolicySource::Expr(__failcore_policy)),
        ),
    };

    let param_infos = params.iter().map(|prm| {
        let pname = prm.ident.to_string();
        let role = format_ident!(
            "{}",
            match prm.role {
                Role::Fingerprinted => "Fingerprinted",
                Role::Redacted => "Redacted",
                Role::Skipped => "Skipped",
            }
        );
        let path = is_path_type(&prm.ty);
        quote!(#p::Param { name: #pname, role: #p::ParamRole::#role, path: #path })
    });
    let redact_args = &args.redact_args;
    let redact_output = &args.redact_output;
    let serialized = params
        .iter()
        .filter(|prm| prm.role != Role::Skipped)
        .map(|prm| {
            let ident = &prm.ident;
            if prm.receiver {
                // Spanned on `self`: a receiver that is not `Serialize` is reported there, with the
                // remedy (`skip(self)`).
                let by_ref = matches!(&prm.ty, Type::Reference(_));
                let receiver = if by_ref {
                    quote!(#ident)
                } else {
                    quote!(&#ident)
                };
                quote_spanned!(ident.span()=> #p::receiver_identity(#receiver))
            } else {
                quote_spanned!(prm.ty.span()=> &#ident as &dyn #p::ErasedSerialize)
            }
        });

    let recovery = format_ident!(
        "{}",
        match (
            args.recovery.as_ref().map(|c| c.value.as_str()),
            &args.reconcile
        ) {
            (_, Some(_)) => "Reconcile",
            (Some("retry"), _) => "Retry",
            (Some("block"), _) => "Block",
            _ => "Session",
        }
    );
    // Asked first when the call was in flight at a crash: `Some(output)` if the effect landed (served as
    // the call's output), `None` if it did not (the body runs).
    let reconcile = args.reconcile.as_ref().map(|path| {
        let refs = params.iter().map(|prm| {
            let ident = &prm.ident;
            quote!(&#ident)
        });
        quote_spanned! {path.span()=>
            if #p::reconciling() {
                match #path(#(#refs),*).await? {
                    ::core::option::Option::Some(landed) => {
                        #p::reconciled(true);
                        return ::core::result::Result::Ok(landed);
                    }
                    ::core::option::Option::None => #p::reconciled(false),
                }
            }
        }
    });

    let (invoke_fn, invoker) = invoker(&p, sig, params);
    let schema = schema(&p, sig, params);

    quote! {
        #(#attrs)*
        #vis #sig {
            #[allow(non_upper_case_globals)]
            static __FAILCORE_TOOL: #p::ToolDescriptor = #p::ToolDescriptor {
                name: #name,
                version: #version,
                module: ::core::module_path!(),
                description: #description,
                effect: #p::Effect::#effect,
                policy: #policy,
                params: &[#(#param_infos),*],
                redact_args: &[#(#redact_args),*],
                redact_output: &[#(#redact_output),*],
                replay: #replay,
                output: #p::OutputContract::#output,
                recovery: #p::InFlightRecovery::#recovery,
                invoker: #invoker,
                schema: #schema,
                file: ::core::file!(),
                line: ::core::line!(),
                cache: #p::DescriptorCache::new(),
            };
            #policy_fn
            #invoke_fn
            #p::inventory::submit! { #p::Registration(&__FAILCORE_TOOL) }

            let __failcore_args = #p::serialize_args(&__FAILCORE_TOOL, &[#(#serialized),*]);
            let __failcore_call = #p::enter(&__FAILCORE_TOOL, __failcore_args).await;
            #p::run(__failcore_call, move || async move {
                #[allow(
                    unknown_lints,
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::let_unit_value,
                    clippy::unreachable,
                    clippy::empty_loop,
                    clippy::needless_return
                )]
                if false {
                    let __failcore_fake_return: #ret = loop {};
                    return __failcore_fake_return;
                }
                #reconcile
                #block
            })
            .await
        }
    }
}

fn unreachable_return() -> Type {
    // `check` rejects functions without a return type before generation.
    syn::parse_quote!(())
}

/// The argument schema, through `__private::tool_schema!` so that failcore's `schema` feature decides
/// whether any schema code exists. Only tools callable by name have one.
fn schema(p: &TokenStream, sig: &syn::Signature, params: &[Param]) -> TokenStream {
    let callable = sig.receiver().is_none()
        && sig.generics.params.is_empty()
        && params.iter().all(|prm| {
            prm.role != Role::Skipped
                && match &prm.ty {
                    Type::Reference(r) => r.mutability.is_none() && !borrows(&r.elem),
                    ty => !borrows(ty),
                }
        });
    if !callable {
        return quote!(::core::option::Option::None);
    }
    let entries = params.iter().map(|prm| {
        let pname = prm.ident.to_string();
        let ty = match &prm.ty {
            Type::Reference(r) => r.elem.as_ref(),
            ty => ty,
        };
        let required = !is_option(ty);
        quote_spanned!(prm.ty.span()=> #pname: #ty = #required)
    });
    quote!(#p::tool_schema!(#(#entries),*))
}

fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => {
            p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Option")
        }
        Type::Paren(p) => is_option(&p.elem),
        Type::Group(g) => is_option(&g.elem),
        _ => false,
    }
}

/// The by-name entry point for `call_json`, when the tool can have one.
fn invoker(p: &TokenStream, sig: &syn::Signature, params: &[Param]) -> (TokenStream, TokenStream) {
    let not_callable = |why: &str| (quote!(), quote!(#p::Invoker::NotCallable(#why)));
    if sig.receiver().is_some() {
        return not_callable("it is a method: its receiver cannot come from JSON");
    }
    if params.iter().any(|prm| prm.role == Role::Skipped) {
        return not_callable(
            "it has skipped arguments (handles, clients) that cannot come from JSON",
        );
    }
    if !sig.generics.params.is_empty() {
        return not_callable("it has lifetime parameters");
    }
    let mut lets = Vec::new();
    let mut call_args = Vec::new();
    for prm in params {
        let ident = &prm.ident;
        let pname = ident.to_string();
        let (owned, pass) = match &prm.ty {
            Type::Reference(r) if r.mutability.is_none() && !borrows(&r.elem) => {
                let elem = &r.elem;
                (quote!(::std::boxed::Box<#elem>), quote!(&*#ident))
            }
            ty if !borrows(ty) => (quote!(#ty), quote!(#ident)),
            _ => return not_callable("an argument borrows in a way JSON cannot provide"),
        };
        lets.push(quote! {
            let #ident: #owned = match __failcore_args.take(#pname) {
                ::core::result::Result::Ok(v) => v,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            };
        });
        call_args.push(pass);
    }
    let fn_name = &sig.ident;
    let invoke_fn = quote! {
        fn __failcore_invoke(mut __failcore_args: #p::JsonArgs) -> #p::Invocation {
            #[allow(unused_imports)]
            use #p::{InvokeLocal as _, InvokeSend as _};
            (&&#p::InvokeWrap::new(async move {
                #(#lets)*
                if let ::core::result::Result::Err(e) = __failcore_args.finish() {
                    return ::core::result::Result::Err(e);
                }
                #p::encode_output(#fn_name(#(#call_args),*).await)
            }))
            .__failcore_invocation()
        }
    };
    (invoke_fn, quote!(#p::Invoker::Callable(__failcore_invoke)))
}
