//! [`NameMap`]: the map by definition name that a person's [`super::Activation`] is made of.
//!
//! Why not a `BTreeMap`: a person's activation is copied on almost every event (the copy
//! published to readers shares it, see `Profile::take_activation`), decoded whole for every
//! person a backfill re-evaluates, and freed a moment later. A B-tree allocates a node per
//! 11 entries for each of those; here the entries are one sorted vector (one allocation per
//! copy, decode or free), and lookups are a binary search over contiguous names, as before.

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A map from names to values, sorted by name, with the `BTreeMap` methods the engine
/// uses. Keys are shared names (`Arc<str>`): inserting the engine's own name is a
/// reference count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMap<V> {
    entries: Vec<(Arc<str>, V)>,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> NameMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, k: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(n, _)| (**n).cmp(k))
    }

    pub fn get<Q: AsRef<str> + ?Sized>(&self, k: &Q) -> Option<&V> {
        let i = self.find(k.as_ref()).ok()?;
        Some(&self.entries[i].1)
    }

    pub fn get_mut<Q: AsRef<str> + ?Sized>(&mut self, k: &Q) -> Option<&mut V> {
        let i = self.find(k.as_ref()).ok()?;
        Some(&mut self.entries[i].1)
    }

    pub fn contains_key<Q: AsRef<str> + ?Sized>(&self, k: &Q) -> bool {
        self.find(k.as_ref()).is_ok()
    }

    /// Sets the value under `k`; returns the one it replaced.
    pub fn insert(&mut self, k: Arc<str>, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, v)),
            Err(i) => {
                self.entries.insert(i, (k, v));
                None
            }
        }
    }

    pub fn remove<Q: AsRef<str> + ?Sized>(&mut self, k: &Q) -> Option<V> {
        let i = self.find(k.as_ref()).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// Removes the entry under `k`, returning its shared key with the value.
    pub fn remove_entry<Q: AsRef<str> + ?Sized>(&mut self, k: &Q) -> Option<(Arc<str>, V)> {
        let i = self.find(k.as_ref()).ok()?;
        Some(self.entries.remove(i))
    }

    /// The value under `k`, inserted with `new` when missing (`k` is cloned only then).
    pub fn get_or_insert_with(&mut self, k: &Arc<str>, new: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(k) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (k.clone(), new()));
                i
            }
        };
        &mut self.entries[i].1
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Arc<str>, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut V)> + '_ {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }
}

impl<V> FromIterator<(Arc<str>, V)> for NameMap<V> {
    /// As a `BTreeMap` collects: sorted, and the last of equal keys wins. Input already in
    /// order (a decoded record) is taken as it is.
    fn from_iter<I: IntoIterator<Item = (Arc<str>, V)>>(iter: I) -> Self {
        let mut entries: Vec<(Arc<str>, V)> = iter.into_iter().collect();
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable: equal keys keep their order, and the last one is kept below.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(Arc<str>, V)> = Vec::with_capacity(entries.len());
            for e in entries {
                match out.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => out.push(e),
                }
            }
            entries = out;
        }
        Self { entries }
    }
}

impl<V> IntoIterator for NameMap<V> {
    type Item = (Arc<str>, V);
    type IntoIter = std::vec::IntoIter<(Arc<str>, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

type Pair<'a, V> = (&'a Arc<str>, &'a V);

impl<'a, V> IntoIterator for &'a NameMap<V> {
    type Item = Pair<'a, V>;
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (Arc<str>, V)>, fn(&'a (Arc<str>, V)) -> Pair<'a, V>>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

/// The serde form is a JSON object, as the `BTreeMap` it replaces wrote.
impl<V: Serialize> Serialize for NameMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            m.serialize_entry(&**k, v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NameMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<String, V>::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (Arc::from(k), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(k: u8) -> Arc<str> {
        Arc::from(format!("k{k}").as_str())
    }

    proptest! {
        /// Any sequence of inserts, removes and retains leaves the same entries, in the
        /// same order, as a `BTreeMap` given the same sequence.
        #[test]
        fn behaves_as_a_btreemap(ops in proptest::collection::vec((0u8..4, 0u8..12, any::<i32>()), 0..80)) {
            let mut mine: NameMap<i32> = NameMap::new();
            let mut reference: BTreeMap<String, i32> = BTreeMap::new();
            for (op, k, v) in ops {
                let name = format!("k{k}");
                match op {
                    0 | 1 => prop_assert_eq!(mine.insert(key(k), v), reference.insert(name, v)),
                    2 => prop_assert_eq!(mine.remove(&name), reference.remove(&name)),
                    _ => {
                        mine.retain(|_, x| *x % 3 != 0);
                        reference.retain(|_, x| *x % 3 != 0);
                    }
                }
                let got: Vec<(String, i32)> = mine.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let want: Vec<(String, i32)> = reference.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(got, want);
            }
        }

        /// Collecting sorts and keeps the last of equal keys, as `BTreeMap` does.
        #[test]
        fn collects_as_a_btreemap(pairs in proptest::collection::vec((0u8..10, any::<i32>()), 0..40)) {
            let mine: NameMap<i32> = pairs.iter().map(|(k, v)| (key(*k), *v)).collect();
            let reference: BTreeMap<String, i32> = pairs.iter().map(|(k, v)| (format!("k{k}"), *v)).collect();
            let got: Vec<(String, i32)> = mine.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            prop_assert_eq!(got, reference.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn serializes_as_a_json_object_and_inserts_in_order() {
        let m: NameMap<i64> = [(key(2), 2), (key(1), 1)].into_iter().collect();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"k1":1,"k2":2}"#);
        let back: NameMap<i64> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let mut n = m.clone();
        *n.get_or_insert_with(&key(3), || 0) += 3;
        *n.get_or_insert_with(&key(1), || 0) += 3;
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"k1":4,"k2":2,"k3":3}"#
        );
        assert_eq!(
            n.remove_entry("k2").map(|(k, v)| (k.to_string(), v)),
            Some(("k2".into(), 2))
        );
        assert!(!n.contains_key("k2") && n.len() == 2);
    }
}
