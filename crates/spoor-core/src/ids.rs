//! Typed identifiers. Raw strings are never passed around for ids: a `SourceId` cannot be
//! confused with a write key or a message id.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind carries, e.g. `src_`.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id (`prefix` + 26 lowercase hex-free base32 chars of a UUIDv4).
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::new_v4().simple()))
            }

            /// Accepts an id string if it carries the right prefix.
            pub fn parse(s: &str) -> Option<Self> {
                (s.starts_with($prefix) && s.len() > $prefix.len()).then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(
    /// A source of events (a website, an app, a back end); owns write keys.
    SourceId,
    "src_"
);
typed_id!(
    /// An admin API token (the id, not the secret).
    TokenId,
    "tok_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_parse_back() {
        let id = SourceId::generate();
        assert!(id.as_str().starts_with("src_"));
        assert_eq!(SourceId::parse(id.as_str()), Some(id));
        assert_eq!(SourceId::parse("tok_abc"), None);
        assert_eq!(SourceId::parse("src_"), None);
    }
}
