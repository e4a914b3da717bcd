//! Checks that `#[subscriber]` sits on `async fn name(params...) -> Result<(), E>`.

use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::attr::Errors;

/// The parameters' types, if the signature is usable.
pub(crate) fn param_types(item: &ItemFn, errors: &mut Errors) -> Option<Vec<Type>> {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!(
                "#[subscriber] goes on an async fn: write `async fn {}`",
                sig.ident
            ),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "#[subscriber] fns cannot be `unsafe`");
    }
    if sig.generics.lt_token.is_some() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            "#[subscriber] fns cannot be generic: the runtime calls them with one concrete \
             payload type",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "#[subscriber] fns cannot be variadic");
    }
    if let ReturnType::Default = sig.output {
        errors.spanned(
            &sig.ident,
            format!(
                "#[subscriber] fns return a `Result`: add `-> Result<(), YourError>` to `{}`; \
                 Ok acks the message, Err retries it",
                sig.ident
            ),
        );
    }

    if sig.inputs.is_empty() {
        errors.spanned(
            &sig.ident,
            format!(
                "#[subscriber] fns take the payload as a parameter: `async fn {}(event: MyEvent)` \
                 or `(message: flowgate::Message<MyEvent>)`, plus any extractors \
                 (`State<T>`, `Subject`, ...)",
                sig.ident
            ),
        );
        return None;
    }
    let mut types = Vec::with_capacity(sig.inputs.len());
    for param in &sig.inputs {
        match param {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                "#[subscriber] goes on a free async fn, not a method: take the payload \
                 instead of `self`",
            ),
            FnArg::Typed(typed) => match &*typed.ty {
                Type::Reference(reference) => errors.spanned(
                    reference,
                    "#[subscriber] fns take their parameters by value: drop the `&`",
                ),
                Type::ImplTrait(impl_trait) => errors.spanned(
                    impl_trait,
                    "#[subscriber] fns take concrete parameter types, not `impl Trait`",
                ),
                ty => types.push(ty.clone()),
            },
        }
    }
    (types.len() == sig.inputs.len()).then_some(types)
}

/// Whether `ty` names `Message<...>` (by its last path segment).
pub(crate) fn is_message(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Message"),
        Type::Group(group) => is_message(&group.elem),
        Type::Paren(paren) => is_message(&paren.elem),
        _ => false,
    }
}

/// The `Ok` type of a return type written `Result<O, E>`, if it is written so.
pub(crate) fn ok_type(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else {
        return None;
    };
    let segment = path.path.segments.last()?;
    if segment.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(ok) => Some(ok),
        _ => None,
    }
}
