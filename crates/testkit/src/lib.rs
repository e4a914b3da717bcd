//! In-memory broker for flowgate.
