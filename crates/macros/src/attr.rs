//! Parsing `key = value, ...` attribute arguments, shared by both macros.
//!
//! Every problem is a [`syn::Error`] spanned on the offending token; callers
//! collect them in [`Errors`] so one compile reports all of them at once.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitInt, LitStr, Meta, Token};

/// One `key = value` pair.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) value: Expr,
}

/// Accumulates errors; [`Errors::finish`] combines them into one.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records `error`.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Records an error spanned on `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Keeps the value of `result`, recording its error.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `Err` with every recorded error, if there was one.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Parses `key = value, ...` from the tokens of an attribute, recording
/// malformed entries in `errors` and returning the well-formed ones.
pub(crate) fn parse_args(tokens: TokenStream, errors: &mut Errors) -> Vec<Arg> {
    let parser = |input: ParseStream| Punctuated::<Meta, Token![,]>::parse_terminated(input);
    let Some(metas) = errors.ok(parser.parse2(tokens)) else {
        return Vec::new();
    };
    metas
        .into_iter()
        .filter_map(|meta| errors.ok(to_arg(meta)))
        .collect()
}

fn to_arg(meta: Meta) -> syn::Result<Arg> {
    let path = meta.path();
    let Some(key) = path.get_ident().cloned() else {
        return Err(syn::Error::new_spanned(
            path,
            "expected a key such as `channel`, not a path",
        ));
    };
    match meta {
        Meta::NameValue(nv) => Ok(Arg {
            key,
            value: nv.value,
        }),
        Meta::Path(_) => Err(syn::Error::new_spanned(
            &key,
            format!("`{key}` needs a value: write `{key} = ...`"),
        )),
        Meta::List(list) => Err(syn::Error::new_spanned(
            &list,
            format!("write `{key} = ...`, not `{key}(...)`"),
        )),
    }
}

/// Refuses keys that are unknown or given twice.
pub(crate) struct Keys {
    macro_name: &'static str,
    valid: &'static [&'static str],
    seen: Vec<String>,
}

impl Keys {
    /// A checker for the keys `valid` of the attribute `macro_name`.
    pub(crate) fn new(macro_name: &'static str, valid: &'static [&'static str]) -> Self {
        Self {
            macro_name,
            valid,
            seen: Vec::new(),
        }
    }

    /// `Ok` the first time a valid key is seen.
    pub(crate) fn check(&mut self, key: &Ident) -> syn::Result<()> {
        let name = key.to_string();
        if !self.valid.contains(&name.as_str()) {
            let valid = self
                .valid
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(syn::Error::new_spanned(
                key,
                format!(
                    "unknown key `{name}` in {}; expected one of: {valid}",
                    self.macro_name
                ),
            ));
        }
        if self.seen.contains(&name) {
            return Err(syn::Error::new_spanned(
                key,
                format!("duplicate key `{name}`: give it once"),
            ));
        }
        self.seen.push(name);
        Ok(())
    }
}

/// A literal value, seen through the invisible groups of `macro_rules!`.
pub(crate) fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
}

/// The value of `key` as a string literal; `example` shows a valid one.
pub(crate) fn lit_str(key: &Ident, value: &Expr, example: &str) -> syn::Result<LitStr> {
    match literal(value) {
        Some(Lit::Str(lit)) => Ok(lit.clone()),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`{key}` takes a string literal, like `{key} = {example}`"),
        )),
    }
}

/// The value of `key` as an integer of at least 1; `example` shows a valid one.
pub(crate) fn positive_int<N>(key: &Ident, value: &Expr, example: &str) -> syn::Result<N>
where
    N: std::str::FromStr + PartialOrd + From<u8>,
    N::Err: std::fmt::Display,
{
    let Some(Lit::Int(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` takes an integer literal, like `{key} = {example}`"),
        ));
    };
    positive(key, lit)
}

/// `lit` parsed as an integer of at least 1.
pub(crate) fn positive<N>(key: &Ident, lit: &LitInt) -> syn::Result<N>
where
    N: std::str::FromStr + PartialOrd + From<u8>,
    N::Err: std::fmt::Display,
{
    let n: N = lit
        .base10_parse()
        .map_err(|e| syn::Error::new_spanned(lit, format!("`{key}` is out of range: {e}")))?;
    if n < N::from(1) {
        return Err(syn::Error::new_spanned(
            lit,
            format!("`{key}` must be at least 1"),
        ));
    }
    Ok(n)
}
