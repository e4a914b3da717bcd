//! Checks that `#[subscriber]` sits on `async fn name(param: P) -> Result<(), E>`.

use syn::{FnArg, ItemFn, ReturnType, Type};

use crate::attr::Errors;

/// The one parameter's type, if the signature is usable.
pub(crate) fn param_type(item: &ItemFn, errors: &mut Errors) -> Option<Type> {
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

    let mut params = sig.inputs.iter();
    let param = match (params.next(), params.next()) {
        (Some(param), None) => param,
        (None, _) => {
            errors.spanned(
                &sig.ident,
                format!(
                    "#[subscriber] fns take exactly one parameter, the payload: \
                     `async fn {}(event: MyEvent)` or `(message: flowgate::Message<MyEvent>)`",
                    sig.ident
                ),
            );
            return None;
        }
        (Some(_), Some(_)) => {
            errors.spanned(
                &sig.inputs,
                "#[subscriber] fns take exactly one parameter, the payload (`T` or \
                 `flowgate::Message<T>`); read delivery metadata through `Message<T>`",
            );
            return None;
        }
    };
    match param {
        FnArg::Receiver(receiver) => {
            errors.spanned(
                receiver,
                "#[subscriber] goes on a free async fn, not a method: take the payload \
                 instead of `self`",
            );
            None
        }
        FnArg::Typed(typed) => match &*typed.ty {
            Type::Reference(reference) => {
                errors.spanned(
                    reference,
                    "#[subscriber] fns take their payload by value: drop the `&`",
                );
                None
            }
            Type::ImplTrait(impl_trait) => {
                errors.spanned(
                    impl_trait,
                    "#[subscriber] fns take a concrete payload type, not `impl Trait`",
                );
                None
            }
            ty => Some(ty.clone()),
        },
    }
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
