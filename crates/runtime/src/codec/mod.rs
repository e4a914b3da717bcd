//! The codecs `#[derive(Event)]` can choose from. Generated code calls these
//! through `flowgate::__private`.

pub mod json;
pub mod protobuf;
