//! Tests of `flowgate-macros` through the runtime, kept in a package of their
//! own (see its Cargo.toml): `tests/expand.rs` checks what `#[subscriber]`
//! and `#[derive(Event)]` generate, `tests/ui.rs` runs every case in
//! `tests/ui/` through one trybuild invocation and compares the compiler's
//! errors with the `.stderr` files.
