//! Fault injection for end-to-end tests: a TCP proxy that freezes, delays,
//! cuts and refuses client connections ([`FaultProxy`]).

mod proxy;

pub use proxy::{Direction, FaultProxy, Upstream};
