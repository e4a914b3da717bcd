//! `#[derive(Event)]`: `#[event(channel = "...", codec = "json" | "protobuf", proto = "...")]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{DeriveInput, LitStr};

use crate::attr::{self, Errors, Keys};
use crate::names;

const KEYS: &[&str] = &["channel", "codec", "proto"];

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
    let mut codec_lit: Option<LitStr> = None;
    let mut proto: Option<LitStr> = None;

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
                    codec_lit = Some(lit.clone());
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
                "proto" => {
                    let Some(lit) = errors.ok(attr::lit_str(
                        &arg.key,
                        &arg.value,
                        "\"proto/orders.proto\"",
                    )) else {
                        continue;
                    };
                    match proto_path_error(&lit.value()) {
                        Some(message) => errors.spanned(&lit, message),
                        None => proto = Some(lit),
                    }
                }
                _ => unreachable!("Keys::check lets only {KEYS:?} through"),
            }
        }
    }
    if let (Some(lit), Codec::Json) = (&proto, &codec) {
        let message = match &codec_lit {
            Some(_) => {
                "`proto` names the .proto file of a protobuf event, but this event's \
                        codec is json: write `codec = \"protobuf\"` or drop `proto`"
            }
            None => {
                "`proto` names the .proto file of a protobuf event: add \
                     `codec = \"protobuf\"` (the default codec is json)"
            }
        };
        errors.spanned(lit, message);
    }
    errors.finish()?;

    let ident = &input.ident;
    let channel = match channel {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let schema = match (&codec, &proto) {
        (Codec::Json, _) => quote! {
            {
                #[allow(unused_imports)]
                use ::flowgate::__private::asyncapi::{HasJsonSchema as _, NoJsonSchema as _};
                let schema = ::flowgate::__private::EventSchema::named(
                    ::core::any::type_name::<Self>(),
                )
                .with_content_type(::flowgate::__private::asyncapi::JSON);
                // Autoref specialisation: `HasJsonSchema` where `Self`
                // derives `schemars::JsonSchema`, else `NoJsonSchema`.
                #[allow(clippy::needless_borrow)]
                let json = (&::flowgate::__private::asyncapi::Probe::<Self>::new()).json_schema();
                match json {
                    ::core::option::Option::Some(json) => schema.with_json_schema(json),
                    ::core::option::Option::None => schema,
                }
            }
        },
        (Codec::Protobuf, None) => quote! {
            ::flowgate::__private::EventSchema::named(::core::any::type_name::<Self>())
                .with_content_type(::flowgate::__private::asyncapi::PROTOBUF)
        },
        (Codec::Protobuf, Some(path)) => {
            // Spanned on the path, so a file that is not there is an error
            // at the attribute.
            let source = quote_spanned! {path.span()=>
                ::core::include_str!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #path))
            };
            quote! {
                ::flowgate::__private::EventSchema::named(::core::any::type_name::<Self>())
                    .with_content_type(::flowgate::__private::asyncapi::PROTOBUF)
                    .with_proto(#path, #source)
            }
        }
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

            fn asyncapi_schema() -> ::flowgate::__private::EventSchema {
                #schema
            }
        }
    })
}

/// Why `path` cannot name a `.proto` file, if it cannot.
fn proto_path_error(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some(
            "`proto` is the path of a .proto file, relative to the crate's Cargo.toml, \
                     like `proto = \"proto/orders.proto\"`"
                .to_owned(),
        );
    }
    if !path.ends_with(".proto") {
        return Some(format!(
            "`{path}` is not a .proto file: `proto` names the file that defines this \
             message, relative to the crate's Cargo.toml"
        ));
    }
    if path.starts_with('/') || path.contains('\\') {
        return Some(format!(
            "`{path}`: give the path relative to the crate's Cargo.toml, with `/`, so the \
             build works on every machine"
        ));
    }
    None
}
