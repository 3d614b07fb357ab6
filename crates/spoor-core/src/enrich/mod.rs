//! Enrichment at the door: facts derived from a message that every later stage wants
//! (device class, marketing channel). Computed once here, stored in the envelope.

pub mod useragent;
pub mod utm;

pub use useragent::parse_user_agent;
pub use utm::{utm_from_campaign, utm_from_url};
