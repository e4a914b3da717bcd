//! Runnable flowgate applications; see `src/bin/`.
