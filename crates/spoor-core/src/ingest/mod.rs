//! From bytes a client sent to canonical events: the wire format (tolerant, borrowed
//! parsing), the limits Segment documents, and normalisation/enrichment.

pub mod limits;
pub mod normalize;
pub mod reject;
pub mod wire;

pub use limits::Limits;
pub use normalize::{normalize, IngestContext, Normalized};
pub use reject::{RejectCode, Rejection};
pub use wire::{BatchIn, EventIn};
