//! A compact binary encoding of the hot state records (profiles and their audience and
//! computed-trait states), which the state store writes at every checkpoint and reads at
//! every cache miss.
//!
//! # Why not JSON, why not a serde binary format
//! JSON was most of a checkpoint's encoding cost and of a profile's size: with 50 audiences
//! and 20 computed traits a profile was ≈ 5.5 KB, 3.4 KB of it the activation, keyed by
//! definition names repeated in four maps. A serde binary format (postcard, bincode) cannot
//! hold `serde_json::Value` (its `Deserialize` asks the format what comes next), nor the
//! `skip_serializing_if` and internally tagged enums the JSON forms use; those types keep
//! their serde derives for the API. So this is a purpose-built encoding:
//! - integers are LEB128 varints (signed ones zig-zagged), floats their 8 bytes, so every
//!   value round-trips exactly (a NaN too, which JSON cannot hold);
//! - JSON values (trait values, computed values) are a tagged tree ([`Writer::value`]);
//! - strings that repeat inside a record (source and message ids of trait registers,
//!   values counted by several computed traits) are written once and then referred to by
//!   index ([`Writer::istr`]);
//! - the activation's per-definition maps are written as one list per kind of definition,
//!   name once, with what each map holds for it (see [`activation`]).
//!
//! # Versions
//! A record starts with its format byte: [`PROFILE_V3`] is written; [`PROFILE_V2`] records
//! (whose activation shares the record's strings and cannot be spliced) are still read, and
//! so is a JSON record (format 1, the older state), which starts with `{` (`spoor_store`
//! decodes each). A state written by an older Spoor stays readable and is rewritten in the
//! current form as profiles change; an unknown format byte is an error that names it.
//!
//! Encoders destructure every struct they write (`let Profile { id, traits, … } = p`), so
//! adding a field without encoding it does not compile.

mod activation;
mod profile;
#[cfg(test)]
mod proptests;
mod splice;

pub use activation::{decode_activation, encode_activation};
pub use profile::{decode_profile, decode_profile_lazy, encode_profile, write_profile};
pub use splice::{ActivationView, AudienceEntry};

use serde_json::{Map, Number, Value};

/// The format byte of a binary profile record whose activation shares its strings (read,
/// no longer written).
pub const PROFILE_V2: u8 = 2;

/// The format byte of a binary profile record whose activation is its self-contained,
/// spliceable tail (see [`activation`]).
pub const PROFILE_V3: u8 = 3;

/// How many of the latest interned strings [`Writer::istr`] searches.
const ISTR_WINDOW: usize = 16;

/// Nesting depth of JSON values beyond which a record is refused as corrupt (serde_json's
/// own limit at ingest is 128, so no stored value is deeper).
const MAX_DEPTH: usize = 256;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record format {0} (written by a newer Spoor? `spoor rebuild` re-derives the state)")]
    Format(u8),
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
}

/// `v` as a LEB128 varint: its bytes, and how many of them there are.
fn varint(mut v: u64) -> ([u8; 10], usize) {
    let (mut buf, mut n) = ([0u8; 10], 0);
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    (buf, n + 1)
}

/// Appends encoded values to a buffer.
pub struct Writer<'a, 'b> {
    pub(crate) out: &'a mut Vec<u8>,
    /// Strings written by [`Writer::istr`] so far, with their index.
    strings: Vec<&'b str>,
}

impl<'a, 'b> Writer<'a, 'b> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            strings: Vec::new(),
        }
    }

    pub fn u8(&mut self, b: u8) {
        self.out.push(b);
    }

    pub fn u64(&mut self, v: u64) {
        let (buf, n) = varint(v);
        self.out.extend_from_slice(&buf[..n]);
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    pub fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    pub fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Prefixes what was written since `start` (an offset of the buffer) with its length,
    /// so a reader can skip it: a state spliced into a record, or the part before one.
    /// (Written at every checkpoint for every state: the varint is built on the stack.)
    pub(crate) fn prefix_len(&mut self, start: usize) {
        let (buf, n) = varint((self.out.len() - start) as u64);
        self.out.splice(start..start, buf[..n].iter().copied());
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }

    /// A string that may repeat in the record: `0` and the string the first time, then
    /// its index + 1. Only the latest [`ISTR_WINDOW`] strings are searched (a linear search
    /// of every one made encoding quadratic; repeats are near each other: the source and
    /// message of registers set by one event, a category counted by several traits). The
    /// reader needs no search, so the window can change without a format change.
    pub fn istr(&mut self, s: &'b str) {
        let n = self.strings.len();
        let from = n.saturating_sub(ISTR_WINDOW);
        if let Some(i) = self.strings[from..].iter().rposition(|x| *x == s) {
            self.usize(from + i + 1);
        } else {
            self.u8(0);
            self.str(s);
            self.strings.push(s);
        }
    }

    /// A `(time, seq)` key.
    pub fn key(&mut self, k: (i64, u64)) {
        self.i64(k.0);
        self.u64(k.1);
    }

    /// A JSON value as a tagged tree.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(T_NULL),
            Value::Bool(false) => self.u8(T_FALSE),
            Value::Bool(true) => self.u8(T_TRUE),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    self.u8(T_UINT);
                    self.u64(u);
                } else if let Some(i) = n.as_i64() {
                    // Negative (non-negative ones are u64 above): stored as -(i + 1).
                    self.u8(T_NINT);
                    self.u64(!(i as u64));
                } else {
                    self.u8(T_FLOAT);
                    self.f64(n.as_f64().unwrap_or(f64::NAN));
                }
            }
            Value::String(s) => {
                self.u8(T_STR);
                self.str(s);
            }
            Value::Array(a) => {
                self.u8(T_ARRAY);
                self.usize(a.len());
                for x in a {
                    self.value(x);
                }
            }
            Value::Object(m) => {
                self.u8(T_OBJECT);
                self.usize(m.len());
                for (k, x) in m {
                    self.str(k);
                    self.value(x);
                }
            }
        }
    }
}

const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_UINT: u8 = 3;
const T_NINT: u8 = 4;
const T_FLOAT: u8 = 5;
const T_STR: u8 = 6;
const T_ARRAY: u8 = 7;
const T_OBJECT: u8 = 8;

/// Reads what a [`Writer`] wrote, in the same order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    strings: Vec<&'a str>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            strings: Vec::new(),
        }
    }

    /// Whether everything was read (a decoder checks this at the end of a record).
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::Corrupt("bytes after the record"))
        }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(DecodeError::Corrupt("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError::Corrupt("varint too long"));
            }
        }
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let u = self.u64()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A length or count; bounded by the bytes left (every element takes at least one), so
    /// a corrupt count cannot make a decoder reserve gigabytes.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        let end = self.pos + 8;
        let b = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Corrupt("bool")),
        }
    }

    pub fn str_ref(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.count()?;
        let end = self.pos + n;
        let b = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        std::str::from_utf8(b).map_err(|_| DecodeError::Corrupt("invalid UTF-8"))
    }

    pub fn str(&mut self) -> Result<String, DecodeError> {
        self.str_ref().map(str::to_owned)
    }

    /// A part written with [`Writer::prefix_len`], as its bytes.
    pub(crate) fn prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count()?;
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let b = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(b)
    }

    /// The bytes not read yet (consumed).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let b = &self.buf[self.pos..];
        self.pos = self.buf.len();
        b
    }

    /// Where the reader is in its buffer.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(DecodeError::Corrupt("option")),
        }
    }

    pub fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.i64().map(Some),
            _ => Err(DecodeError::Corrupt("option")),
        }
    }

    /// See [`Writer::istr`].
    pub fn istr_ref(&mut self) -> Result<&'a str, DecodeError> {
        match self.u64()? {
            0 => {
                let s = self.str_ref()?;
                self.strings.push(s);
                Ok(s)
            }
            i => self
                .strings
                .get((i - 1) as usize)
                .copied()
                .ok_or(DecodeError::Corrupt("string reference")),
        }
    }

    pub fn istr(&mut self) -> Result<String, DecodeError> {
        self.istr_ref().map(str::to_owned)
    }

    pub fn key(&mut self) -> Result<(i64, u64), DecodeError> {
        Ok((self.i64()?, self.u64()?))
    }

    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Corrupt("value nested too deep"));
        }
        Ok(match self.u8()? {
            T_NULL => Value::Null,
            T_FALSE => Value::Bool(false),
            T_TRUE => Value::Bool(true),
            T_UINT => Value::Number(Number::from(self.u64()?)),
            T_NINT => match self.u64()? {
                u if u <= i64::MAX as u64 => Value::Number(Number::from(!u as i64)),
                _ => return Err(DecodeError::Corrupt("negative integer out of range")),
            },
            T_FLOAT => Value::Number(
                Number::from_f64(self.f64()?).ok_or(DecodeError::Corrupt("non-finite number"))?,
            ),
            T_STR => Value::String(self.str()?),
            T_ARRAY => {
                let n = self.count()?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value_at(depth + 1)?);
                }
                Value::Array(a)
            }
            T_OBJECT => {
                let n = self.count()?;
                let mut m = Map::new();
                for _ in 0..n {
                    let k = self.str()?;
                    let v = self.value_at(depth + 1)?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            _ => return Err(DecodeError::Corrupt("value tag")),
        })
    }
}
