//! A person's [`Activation`] that may still be in its stored (encoded) form.
//!
//! Why: with many definitions the activation is most of a profile record, and decoding it
//! is most of reading one (states of every audience and computed trait, each its own
//! allocation). A backfill that adds one audience rewrites every person whose events it
//! concerns, but changes one entry of each activation: decoding all the others, encoding
//! them again at the checkpoint and freeing them afterwards was most of its work. A profile
//! read for such a rewrite keeps its activation encoded ([`LazyActivation::encoded`]); the
//! rewrite splices the changed entries into the bytes (`codec::ActivationView::splice`),
//! and the checkpoint writes the bytes as they are. Anyone who reads it (the processor on
//! the person's next event, the Profile API) decodes it once, on first use.
//!
//! Every other profile is decoded whole when read, as before: a corrupt record is an error
//! there. The only reader that keeps the encoded form (a backfill adding audiences) parses
//! its framing before splicing (`ActivationView::parse`, an error if it is corrupt), and
//! only spliced bytes are kept, so what is left to find on first use is a corrupt state.

use super::Activation;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// An [`Activation`], decoded, or encoded and decoded on first use. Dereferences to the
/// activation; [`Self::make_mut`] changes it (the encoded form is then dropped).
#[derive(Default)]
pub struct LazyActivation {
    decoded: OnceLock<Arc<Activation>>,
    /// The encoded activation (`codec` format of a `PROFILE_V3` record's tail) while it
    /// is what `decoded` holds or would hold.
    encoded: Option<Arc<[u8]>>,
}

impl LazyActivation {
    /// An activation kept encoded until used (see the module docs for who may build one).
    pub fn encoded(bytes: Arc<[u8]>) -> Self {
        Self {
            decoded: OnceLock::new(),
            encoded: Some(bytes),
        }
    }

    /// The encoded form, if this activation is unchanged since it was read or spliced:
    /// what a record writer copies instead of encoding.
    pub fn encoded_bytes(&self) -> Option<&[u8]> {
        self.encoded.as_deref()
    }

    /// Whether it is decoded: not when built by [`Self::encoded`] and not used since.
    pub fn is_decoded(&self) -> bool {
        self.encoded.is_none() || self.decoded.get().is_some()
    }

    /// The decoded activation, decoding it on first use.
    ///
    /// # Panics
    /// When the encoded form does not decode: a state that was corrupt on disk. Records
    /// read normally are decoded whole at once and report it as an error; see the module
    /// docs.
    pub fn shared(&self) -> &Arc<Activation> {
        self.decoded.get_or_init(|| {
            let Some(b) = self.encoded.as_deref() else {
                // The default: empty, allocated when first used.
                return Arc::default();
            };
            Arc::new(crate::codec::decode_activation(b).unwrap_or_else(|e| {
                panic!(
                    "a profile's audience and computed-trait states are unreadable ({e}); \
                     `spoor rebuild` re-derives them from the event log"
                )
            }))
        })
    }

    /// The activation to change (decoded first, copied first if shared with readers).
    pub fn make_mut(&mut self) -> &mut Activation {
        self.shared();
        self.encoded = None;
        let a = self.decoded.get_mut().expect("decoded above");
        Arc::make_mut(a)
    }

    /// Takes the decoded activation out, leaving an empty one.
    pub fn take(&mut self) -> Arc<Activation> {
        self.shared();
        self.encoded = None;
        self.decoded.take().unwrap_or_default()
    }
}

impl Deref for LazyActivation {
    type Target = Activation;

    fn deref(&self) -> &Activation {
        self.shared()
    }
}

impl Clone for LazyActivation {
    fn clone(&self) -> Self {
        let decoded = OnceLock::new();
        if let Some(a) = self.decoded.get() {
            let _ = decoded.set(a.clone());
        }
        Self {
            decoded,
            encoded: self.encoded.clone(),
        }
    }
}

impl PartialEq for LazyActivation {
    fn eq(&self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (&self.encoded, &other.encoded) {
            if a == b {
                return true;
            }
        }
        **self == **other
    }
}

impl std::fmt::Debug for LazyActivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<Activation> for LazyActivation {
    fn from(a: Activation) -> Self {
        Arc::new(a).into()
    }
}

impl From<Arc<Activation>> for LazyActivation {
    fn from(a: Arc<Activation>) -> Self {
        Self {
            decoded: OnceLock::from(a),
            encoded: None,
        }
    }
}

impl Serialize for LazyActivation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for LazyActivation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Activation::deserialize(d).map(Into::into)
    }
}
