//! `#[subscriber(...)]`: keeps the fn, adds `<fn name>::subscriber()` and
//! registers it in `flowgate::__private::SUBSCRIBERS`.

mod args;
mod signature;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemFn, Type};

use crate::attr::Errors;
use args::{Args, Start};

/// Expands `#[subscriber(attr)]` on `item`. On errors the fn is kept as written
/// next to the errors, so code that calls it does not fail on top of them.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(item_fn) => item_fn,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item,
                "#[subscriber] goes on an async fn: `async fn name(event: MyEvent) -> \
                 Result<(), MyError>`",
            );
            return error.to_compile_error();
        }
    };
    let mut errors = Errors::default();
    let args = Args::parse(attr, &mut errors);
    let params = signature::param_types(&item_fn, &mut errors);
    if let (Some(span), Some(params)) = (args.manual_ack, &params) {
        if !params.iter().any(signature::is_message) {
            errors.spanned(
                &item_fn.sig.inputs,
                "`ack = \"manual\"` needs a `flowgate::Message<T>` parameter to ack with: \
                 take `Message<T>` instead of `T`",
            );
            errors.push(syn::Error::new(span, "manual acks asked for here"));
        }
    }
    match (errors.finish(), params) {
        (Ok(()), Some(params)) => generate(&item_fn, &args, &params),
        (Err(error), _) => {
            let error = error.to_compile_error();
            quote!(#error #item_fn)
        }
        (Ok(()), None) => unreachable!("an unusable parameter list is always an error"),
    }
}

fn generate(item_fn: &ItemFn, args: &Args, params: &[Type]) -> TokenStream {
    let vis = &item_fn.vis;
    let ident = &item_fn.sig.ident;
    let name = ident.unraw().to_string();
    let inputs = &item_fn.sig.inputs;
    // Each parameter's traits are named where its type is written, so a
    // type that is neither an event nor an extractor is reported there.
    let payload = params
        .iter()
        .map(|param| quote_spanned!(param.span()=> <#param as ::flowgate::FromRequest>::PAYLOAD))
        .collect::<Vec<_>>();
    let payloads = quote!(0 #(+ #payload as usize)*);

    let (channel_const, channel) = match &args.channel {
        Some(lit) => (TokenStream::new(), lit.to_token_stream()),
        None => (
            declared_channel(params, &payload, &payloads),
            quote!(CHANNEL),
        ),
    };
    let payload_check = payload_check(&name, inputs, &payloads);
    // The `Ok` type is checked where it is written, when it is written.
    let output_check = signature::ok_type(&item_fn.sig.output).map(|ok| {
        quote_spanned! {ok.span()=>
            const _: () = ::flowgate::__private::is_output::<#ok>();
        }
    });

    let mut settings = TokenStream::new();
    if let Some(durable) = &args.durable {
        settings.extend(quote!(.durable(#durable)));
    }
    if let Some(queue) = &args.queue {
        settings.extend(quote!(.queue(#queue)));
    }
    if let Some(start) = &args.start {
        let start = start_tokens(start);
        settings.extend(quote!(.start(#start)));
    }
    if let Some(ack_wait) = args.ack_wait {
        let duration = duration_tokens(ack_wait);
        settings.extend(quote!(.ack_wait(#duration)));
    }
    if args.coalesced_acks {
        settings.extend(quote!(.coalesced_acks()));
    }
    if let Some(timeout) = args.timeout {
        let duration = duration_tokens(timeout);
        settings.extend(quote!(.timeout(#duration)));
    }
    match &args.dead_letter {
        Some(args::DeadLetter::Subject(subject)) => settings.extend(quote!(
            .dead_letter(::flowgate::DeadLetter::Subject(::std::string::String::from(#subject)))
        )),
        Some(args::DeadLetter::Disabled) => {
            settings.extend(quote!(.dead_letter(::flowgate::DeadLetter::Disabled)))
        }
        None => {}
    }
    if let Some(max_deliver) = args.max_deliver {
        settings.extend(quote!(.max_deliver(#max_deliver)));
    }
    if let Some(max_in_flight) = args.max_in_flight {
        settings.extend(quote!(.max_in_flight(#max_in_flight)));
    }
    if args.manual_ack.is_some() {
        settings.extend(quote!(.manual_ack()));
    }

    let new = quote_spanned! {inputs.span()=>
        ::flowgate::Subscriber::new
    };

    // `#ident` names both the fn (value namespace) and a braced struct (type
    // namespace only), so `bill(order)` calls the fn and `bill::subscriber()`
    // builds the subscriber. A struct rather than a module keeps the fn and
    // the payload type in scope without `super::` paths, so this also works
    // inside fn bodies (doctests, local test fns).
    quote! {
        #item_fn

        /// The flowgate subscriber declared by `#[subscriber]` on the fn of this name.
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, unreachable_pub)]
        #vis struct #ident {}

        impl #ident {
            /// The flowgate subscriber declared by `#[subscriber]` on this fn.
            #[allow(unreachable_pub)]
            pub fn subscriber() -> ::flowgate::Subscriber {
                #channel_const
                #new(#channel, #ident)
                    .named(#name)
                    #settings
            }
        }

        #payload_check
        #output_check

        const _: () = {
            #[::flowgate::__private::linkme::distributed_slice(::flowgate::__private::SUBSCRIBERS)]
            #[linkme(crate = ::flowgate::__private::linkme)]
            static REGISTRATION: fn() -> ::flowgate::Subscriber = #ident::subscriber;
        };
    }
}

/// `const CHANNEL`: the channel the payload type declares, or a compile error
/// pointing at the parameters when it declares none.
fn declared_channel(
    params: &[Type],
    payload: &[TokenStream],
    payloads: &TokenStream,
) -> TokenStream {
    let (payload_name, span) = match params {
        [param] => (format!("`{}`", type_name(param)), param.span()),
        _ => ("the payload type".to_owned(), params[0].span()),
    };
    let message = format!(
        "{payload_name} declares no channel: add #[event(channel = \"...\")] to the type, or \
         channel = \"...\" to #[subscriber]"
    );
    let channel = params
        .iter()
        .map(|param| quote_spanned!(param.span()=> <#param as ::flowgate::FromRequest>::CHANNEL));
    quote_spanned! {span=>
        const CHANNEL: &str = match (
            #payloads,
            ::flowgate::__private::payload_channel(&[#((#payload, #channel)),*]),
        ) {
            (_, ::core::option::Option::Some(channel)) => channel,
            (1, ::core::option::Option::None) => ::core::panic!(#message),
            // Reported by the payload check.
            (_, ::core::option::Option::None) => "",
        };
    }
}

/// A compile error pointing at the parameters unless exactly one of them is
/// the payload.
fn payload_check(name: &str, inputs: &impl ToTokens, payloads: &TokenStream) -> TokenStream {
    let none = format!(
        "`{name}` takes no payload parameter: add one, an event type \
         (#[derive(flowgate::Event)]) or flowgate::Message<YourEvent>; the other \
         parameters are extractors"
    );
    let many = format!(
        "`{name}` takes more than one payload parameter, and a message has one payload: \
         keep one event (or flowgate::Message<YourEvent>) parameter; the others must be \
         extractors (State<T>, Subject, Attempt, Headers, your own FromRequest type)"
    );
    quote_spanned! {inputs.span()=>
        const _: () = match #payloads {
            1 => {}
            0 => ::core::panic!(#none),
            _ => ::core::panic!(#many),
        };
    }
}

/// `ty` as written, without the spaces that token printing puts in.
fn type_name(ty: &Type) -> String {
    let mut name = ty.to_token_stream().to_string();
    for (spaced, tight) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
    ] {
        name = name.replace(spaced, tight);
    }
    name
}

fn start_tokens(start: &Start) -> TokenStream {
    match start {
        Start::New => quote!(::flowgate::StartPosition::New),
        Start::All => quote!(::flowgate::StartPosition::All),
        Start::Last => quote!(::flowgate::StartPosition::Last),
        Start::Sequence(sequence) => quote!(::flowgate::StartPosition::Sequence(#sequence)),
        Start::Time(since_epoch) => {
            let since_epoch = duration_tokens(*since_epoch);
            quote!(::flowgate::StartPosition::Time(::std::time::UNIX_EPOCH + #since_epoch))
        }
    }
}

fn duration_tokens(duration: std::time::Duration) -> TokenStream {
    let secs = duration.as_secs();
    let nanos = duration.subsec_nanos();
    quote!(::core::time::Duration::new(#secs, #nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_read_as_written() {
        let ty: Type = syn::parse_quote!(flowgate::Message<crate::events::Order>);
        assert_eq!(type_name(&ty), "flowgate::Message<crate::events::Order>");
    }
}
