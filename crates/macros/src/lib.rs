//! Procedural macros for flowgate. Use them through `flowgate`, which re-exports them.
use proc_macro::TokenStream;

/// Derives `flowgate::Event`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Turns an async fn into a flowgate subscriber.
#[proc_macro_attribute]
pub fn subscriber(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
