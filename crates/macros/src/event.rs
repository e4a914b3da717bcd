//! `#[derive(Event)]`: `#[event(channel = "...", codec = "json" | "protobuf")]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr};

use crate::attr::{self, Errors, Keys};
use crate::names;

const KEYS: &[&str] = &["channel", "codec"];

/// The wire format of an event.
enum Codec {
    Json,
    Protobuf,
}

/// Expands the derive, or returns every error found in the input.
pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut keys = Keys::new("#[event]", KEYS);
    let mut channel: Option<LitStr> = None;
    let mut codec = Codec::Json;

    if input.generics.lt_token.is_some() || input.generics.where_clause.is_some() {
        errors.spanned(
            &input.generics,
            "#[derive(Event)] does not support generic types: derive it on a concrete \
             type, or implement `flowgate::Event` by hand",
        );
    }

    for attribute in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        let tokens = match &attribute.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            other => {
                errors.spanned(
                    other,
                    "write `#[event(channel = \"...\", codec = \"json\" | \"protobuf\")]`",
                );
                continue;
            }
        };
        for arg in attr::parse_args(tokens, &mut errors) {
            if errors.ok(keys.check(&arg.key)).is_none() {
                continue;
            }
            match arg.key.to_string().as_str() {
                "channel" => {
                    let Some(lit) =
                        errors.ok(attr::lit_str(&arg.key, &arg.value, "\"orders.placed\""))
                    else {
                        continue;
                    };
                    match names::channel_error(&lit.value()) {
                        Some(message) => errors.spanned(&lit, message),
                        None => channel = Some(lit),
                    }
                }
                "codec" => {
                    let Some(lit) = errors.ok(attr::lit_str(&arg.key, &arg.value, "\"json\""))
                    else {
                        continue;
                    };
                    match lit.value().as_str() {
                        "json" => codec = Codec::Json,
                        "protobuf" => codec = Codec::Protobuf,
                        other => errors.spanned(
                            &lit,
                            format!(
                                "unknown codec `{other}`; expected \"json\" (serde, the \
                                 default) or \"protobuf\" (prost::Message)"
                            ),
                        ),
                    }
                }
                _ => unreachable!("Keys::check lets only {KEYS:?} through"),
            }
        }
    }
    errors.finish()?;

    let ident = &input.ident;
    let channel = match channel {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let codec = match codec {
        Codec::Json => quote!(::flowgate::__private::json),
        Codec::Protobuf => quote!(::flowgate::__private::protobuf),
    };
    Ok(quote! {
        #[automatically_derived]
        impl ::flowgate::Event for #ident {
            const CHANNEL: ::core::option::Option<&'static str> = #channel;

            fn encode(
                &self,
            ) -> ::core::result::Result<::flowgate::__private::Bytes, ::flowgate::EncodeError> {
                #codec::encode(self)
            }

            fn decode(
                payload: &[u8],
            ) -> ::core::result::Result<Self, ::flowgate::DecodeError> {
                #codec::decode(payload)
            }
        }
    })
}
