//! tandem core.
pub mod envelope;
