//! The arguments of `#[subscriber(...)]`, parsed and validated.

use std::time::{Duration, UNIX_EPOCH};

use proc_macro2::{Span, TokenStream};
use syn::{Expr, Ident, Lit, LitStr};

use crate::attr::{self, Arg, Errors, Keys};
use crate::names;

const KEYS: &[&str] = &[
    "channel",
    "durable",
    "queue",
    "start",
    "ack_wait",
    "max_deliver",
    "max_in_flight",
    "ack",
    "timeout",
    "dead_letter",
];

/// Where a new subscription starts (mirrors `flowgate::StartPosition`).
pub(crate) enum Start {
    New,
    All,
    Last,
    Sequence(u64),
    /// Time since the Unix epoch.
    Time(Duration),
}

/// Everything `#[subscriber(...)]` was given; `None` keeps the runtime default.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) channel: Option<LitStr>,
    pub(crate) durable: Option<LitStr>,
    pub(crate) queue: Option<LitStr>,
    pub(crate) start: Option<Start>,
    pub(crate) ack_wait: Option<Duration>,
    pub(crate) max_deliver: Option<u32>,
    pub(crate) max_in_flight: Option<usize>,
    /// The span of `ack = "manual"`, when given.
    pub(crate) manual_ack: Option<Span>,
    /// `ack = "coalesced"`.
    pub(crate) coalesced_acks: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) dead_letter: Option<DeadLetter>,
}

/// Where dead letters go (mirrors `flowgate::DeadLetter`).
pub(crate) enum DeadLetter {
    Subject(LitStr),
    Disabled,
}

impl Args {
    /// Parses the attribute's tokens, recording every problem in `errors`.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut args = Args::default();
        let mut keys = Keys::new("#[subscriber]", KEYS);
        for arg in attr::parse_args(tokens, errors) {
            if errors.ok(keys.check(&arg.key)).is_some() {
                let result = args.set(&arg);
                errors.ok(result);
            }
        }
        args
    }

    fn set(&mut self, Arg { key, value }: &Arg) -> syn::Result<()> {
        match key.to_string().as_str() {
            "channel" => {
                let lit = attr::lit_str(key, value, "\"orders.placed\"")?;
                check(&lit, names::channel_error(&lit.value()))?;
                self.channel = Some(lit);
            }
            "durable" | "queue" => {
                let lit = attr::lit_str(key, value, "\"billing\"")?;
                check(
                    &lit,
                    names::consumer_name_error(&key.to_string(), &lit.value()),
                )?;
                if key == "durable" {
                    self.durable = Some(lit);
                } else {
                    self.queue = Some(lit);
                }
            }
            "start" => self.start = Some(start(key, value)?),
            "ack_wait" => {
                let lit = attr::lit_str(key, value, "\"30s\"")?;
                self.ack_wait = Some(ack_wait(&lit)?);
            }
            "max_deliver" => self.max_deliver = Some(attr::positive_int(key, value, "5")?),
            "max_in_flight" => self.max_in_flight = Some(attr::positive_int(key, value, "32")?),
            "timeout" => {
                let lit = attr::lit_str(key, value, "\"10s\"")?;
                self.timeout = Some(timeout(&lit)?);
            }
            "dead_letter" => self.dead_letter = Some(dead_letter(value)?),
            "ack" => {
                let lit = attr::lit_str(key, value, "\"manual\"")?;
                match lit.value().as_str() {
                    "auto" => self.manual_ack = None,
                    "manual" => self.manual_ack = Some(lit.span()),
                    "coalesced" => self.coalesced_acks = true,
                    other => {
                        return Err(syn::Error::new_spanned(
                            &lit,
                            format!(
                                "unknown ack mode `{other}`; expected \"auto\" (the default: \
                                 Ok acks, Err naks), \"manual\" (the handler acks through \
                                 flowgate::Message) or \"coalesced\" (one ack covers the \
                                 handled messages before it; JetStream)"
                            ),
                        ))
                    }
                }
            }
            _ => unreachable!("Keys::check lets only {KEYS:?} through"),
        }
        Ok(())
    }
}

fn check(lit: &LitStr, error: Option<String>) -> syn::Result<()> {
    match error {
        Some(message) => Err(syn::Error::new_spanned(lit, message)),
        None => Ok(()),
    }
}

const START_HELP: &str = "expected \"new\", \"all\", \"last\", a stream sequence like \
    `start = 42`, or an RFC 3339 UTC time like \"2024-05-01T00:00:00Z\"";

fn start(key: &Ident, value: &Expr) -> syn::Result<Start> {
    match attr::literal(value) {
        Some(Lit::Int(lit)) => Ok(Start::Sequence(attr::positive(key, lit)?)),
        Some(Lit::Str(lit)) => match lit.value().as_str() {
            "new" => Ok(Start::New),
            "all" => Ok(Start::All),
            "last" => Ok(Start::Last),
            text => {
                let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
                    syn::Error::new_spanned(
                        lit,
                        format!("`start = \"{text}\"` is not a start position ({e}); {START_HELP}"),
                    )
                })?;
                let since_epoch = time
                    .duration_since(UNIX_EPOCH)
                    .map_err(|_| syn::Error::new_spanned(lit, "`start` time is before 1970"))?;
                Ok(Start::Time(since_epoch))
            }
        },
        _ => Err(syn::Error::new_spanned(
            value,
            format!("`start` takes a string or integer literal; {START_HELP}"),
        )),
    }
}

fn ack_wait(lit: &LitStr) -> syn::Result<Duration> {
    let text = lit.value();
    let duration = humantime::parse_duration(&text).map_err(|e| {
        syn::Error::new_spanned(
            lit,
            format!(
                "`ack_wait = \"{text}\"` is not a duration ({e}); write it like \"30s\", \
                 \"2m\" or \"1m 30s\""
            ),
        )
    })?;
    if duration < Duration::from_secs(1) {
        return Err(syn::Error::new_spanned(
            lit,
            format!("`ack_wait = \"{text}\"` is too short: brokers need at least \"1s\""),
        ));
    }
    Ok(duration)
}

fn timeout(lit: &LitStr) -> syn::Result<Duration> {
    let text = lit.value();
    let duration = humantime::parse_duration(&text).map_err(|e| {
        syn::Error::new_spanned(
            lit,
            format!(
                "`timeout = \"{text}\"` is not a duration ({e}); write it like \"10s\" or \"500ms\""
            ),
        )
    })?;
    if duration.is_zero() {
        return Err(syn::Error::new_spanned(
            lit,
            "`timeout` must be longer than zero: every attempt would time out",
        ));
    }
    Ok(duration)
}

fn dead_letter(value: &Expr) -> syn::Result<DeadLetter> {
    match attr::literal(value) {
        Some(Lit::Str(lit)) => {
            check(lit, names::subject_error(&lit.value()))?;
            Ok(DeadLetter::Subject(lit.clone()))
        }
        Some(Lit::Bool(flag)) if !flag.value => Ok(DeadLetter::Disabled),
        _ => Err(syn::Error::new_spanned(
            value,
            "`dead_letter` takes a subject like \"orders.failed\", or `false` to turn dead letters off (the default is \"dlq.<channel>\")",
        )),
    }
}
