//! The binary form of a person's [`Activation`].
//!
//! In memory the activation is kept as maps by definition name (`computed` and `values`
//! per computed trait; `audiences`, `members` and `next` per audience), which in JSON wrote
//! every audience name up to three times. Here each kind of definition is one list in name
//! order: a flags byte saying which maps hold the name, the name, then those maps' entries.
//! A zero flags byte ends the list (every entry has at least one bit set).
//!
//! # Layouts
//! - In a `PROFILE_V3` record the activation is the record's tail, written on its own (its
//!   repeated strings refer only to its own), and framed so that audience entries can be
//!   replaced without decoding the rest (`splice::ActivationView`): the revision and timers, the
//!   computed traits' list prefixed with its length, then per audience the flags, the
//!   name, the membership time and next change, and the state prefixed with its length.
//!   [`encode_activation`] writes this form.
//! - In a `PROFILE_V2` record (still read) it shares the record's strings, the computed
//!   list has no length, and an audience entry is flags, name, state, membership, next.

use super::profile::map;
use super::{DecodeError, Reader, Writer};
use crate::audience::{Activation, AudienceState, Keys, SlotState, Slots, Stamps};
use crate::computed::{ComputedState, Sum};
use std::iter::Peekable;
use std::sync::Arc;

/// The activation alone, in the layout of a `PROFILE_V3` record's tail.
pub fn encode_activation(a: &Activation) -> Vec<u8> {
    let mut out = Vec::new();
    write_activation(&mut Writer::new(&mut out), a);
    out
}

/// Decodes [`encode_activation`]'s form.
pub fn decode_activation(b: &[u8]) -> Result<Activation, DecodeError> {
    let mut r = Reader::new(b);
    let a = read_activation(&mut r, Layout::V3)?;
    r.finish()?;
    Ok(a)
}

/// Which record format an activation is read from (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    V2,
    V3,
}

/// Takes the next entry of `it` if its key is `name`.
fn take<'a, V: 'a, I: Iterator<Item = (&'a str, V)>>(
    it: &mut Peekable<I>,
    name: &str,
) -> Option<V> {
    it.next_if(|(k, _)| *k == name).map(|(_, v)| v)
}

pub(super) fn smallest<'a>(keys: impl IntoIterator<Item = Option<&'a str>>) -> Option<&'a str> {
    keys.into_iter().flatten().min()
}

pub(super) const HAS_STATE: u8 = 1;
const HAS_VALUE: u8 = 2;
pub(super) const IS_MEMBER: u8 = 2;
pub(super) const HAS_NEXT: u8 = 4;

fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

/// An audience state to write: decoded, or the bytes of one already encoded.
#[derive(Clone, Copy)]
pub(super) enum StateOut<'s> {
    Decoded(&'s AudienceState),
    Encoded(&'s [u8]),
}

/// One audience entry in the V3 layout.
pub(super) fn write_entry(
    w: &mut Writer<'_, '_>,
    name: &str,
    state: Option<StateOut<'_>>,
    member: Option<i64>,
    next: Option<i64>,
) {
    w.u8(flag(state.is_some(), HAS_STATE)
        | flag(member.is_some(), IS_MEMBER)
        | flag(next.is_some(), HAS_NEXT));
    w.str(name);
    if let Some(since) = member {
        w.i64(since);
    }
    if let Some(t) = next {
        w.i64(t);
    }
    match state {
        Some(StateOut::Decoded(AudienceState { slots })) => {
            let start = w.out.len();
            w.usize(slots.len());
            for slot in slots {
                write_slot(w, slot);
            }
            w.prefix_len(start);
        }
        Some(StateOut::Encoded(b)) => {
            w.usize(b.len());
            w.out.extend_from_slice(b);
        }
        None => {}
    }
}

/// Writes the activation in the V3 layout (the writer must be a fresh one: its strings
/// are the activation's own).
pub(super) fn write_activation<'b>(w: &mut Writer<'_, 'b>, a: &'b Activation) {
    let Activation {
        computed,
        audiences,
        members,
        values,
        next_timer_ms,
        next,
        computed_next,
        revision,
    } = a;
    w.u64(*revision);
    w.opt_i64(*next_timer_ms);
    w.opt_i64(*computed_next);
    let start = w.out.len();
    let mut cs = computed.iter().map(|(k, v)| (&**k, &**v)).peekable();
    let mut vs = values.iter().map(|(k, v)| (k.as_str(), v)).peekable();
    while let Some(name) = smallest([cs.peek().map(|e| e.0), vs.peek().map(|e| e.0)]) {
        let (s, v) = (take(&mut cs, name), take(&mut vs, name));
        w.u8(flag(s.is_some(), HAS_STATE) | flag(v.is_some(), HAS_VALUE));
        w.str(name);
        if let Some(s) = s {
            write_computed(w, s);
        }
        if let Some(v) = v {
            w.value(v);
        }
    }
    w.u8(0);
    w.prefix_len(start);
    let mut st = audiences.iter().map(|(k, v)| (&**k, &**v)).peekable();
    let mut ms = members.iter().map(|(k, v)| (&**k, *v)).peekable();
    let mut nx = next.iter().map(|(k, v)| (&**k, *v)).peekable();
    while let Some(name) = smallest([
        st.peek().map(|e| e.0),
        ms.peek().map(|e| e.0),
        nx.peek().map(|e| e.0),
    ]) {
        let s = take(&mut st, name).map(StateOut::Decoded);
        write_entry(w, name, s, take(&mut ms, name), take(&mut nx, name));
    }
    w.u8(0);
}

pub(super) fn read_activation(
    r: &mut Reader<'_>,
    layout: Layout,
) -> Result<Activation, DecodeError> {
    let revision = r.u64()?;
    let next_timer_ms = r.opt_i64()?;
    let computed_next = r.opt_i64()?;
    let computed_end = match layout {
        Layout::V3 => {
            let n = r.count()?;
            Some(r.pos() + n)
        }
        Layout::V2 => None,
    };
    let (mut computed, mut values) = (Vec::new(), Vec::new());
    loop {
        let flags = r.u8()?;
        if flags == 0 {
            break;
        }
        // Names borrowed from the record: each map key is allocated once, as its own type.
        let name = r.str_ref()?;
        if flags & HAS_STATE != 0 {
            computed.push((Arc::from(name), Arc::new(read_computed(r)?)));
        }
        if flags & HAS_VALUE != 0 {
            values.push((name.to_owned(), r.value()?));
        }
    }
    if computed_end.is_some_and(|end| end != r.pos()) {
        return Err(DecodeError::Corrupt("computed traits' length"));
    }
    let (mut audiences, mut members, mut next) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let flags = r.u8()?;
        if flags == 0 {
            break;
        }
        let name: Arc<str> = Arc::from(r.str_ref()?);
        let read_state = |r: &mut Reader<'_>| -> Result<AudienceState, DecodeError> {
            let end = match layout {
                Layout::V3 => {
                    let n = r.count()?;
                    Some(r.pos() + n)
                }
                Layout::V2 => None,
            };
            let n = r.count()?;
            let mut slots = Slots::with_capacity(n);
            for _ in 0..n {
                slots.push(read_slot(r)?);
            }
            if end.is_some_and(|end| end != r.pos()) {
                return Err(DecodeError::Corrupt("audience state's length"));
            }
            Ok(AudienceState { slots })
        };
        if layout == Layout::V2 && flags & HAS_STATE != 0 {
            audiences.push((name.clone(), Arc::new(read_state(r)?)));
        }
        if flags & IS_MEMBER != 0 {
            members.push((name.clone(), r.i64()?));
        }
        if flags & HAS_NEXT != 0 {
            next.push((name.clone(), r.i64()?));
        }
        if layout == Layout::V3 && flags & HAS_STATE != 0 {
            audiences.push((name, Arc::new(read_state(r)?)));
        }
    }
    Ok(Activation {
        computed: computed.into_iter().collect(),
        audiences: audiences.into_iter().collect(),
        members: members.into_iter().collect(),
        values: Arc::new(values.into_iter().collect()),
        next_timer_ms,
        next: next.into_iter().collect(),
        computed_next,
        revision,
    })
}

fn write_keys(w: &mut Writer<'_, '_>, keys: &[(i64, u64)]) {
    w.usize(keys.len());
    for k in keys {
        w.key(*k);
    }
}

fn read_keys(r: &mut Reader<'_>) -> Result<Keys, DecodeError> {
    let n = r.count()?;
    let mut v = Keys::with_capacity(n);
    for _ in 0..n {
        v.push(r.key()?);
    }
    Ok(v)
}

fn write_opt_key(w: &mut Writer<'_, '_>, k: Option<(i64, u64)>) {
    match k {
        None => w.u8(0),
        Some(k) => {
            w.u8(1);
            w.key(k);
        }
    }
}

fn read_opt_key(r: &mut Reader<'_>) -> Result<Option<(i64, u64)>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => r.key().map(Some),
        _ => Err(DecodeError::Corrupt("option")),
    }
}

fn write_slot(w: &mut Writer<'_, '_>, s: &SlotState) {
    match s {
        SlotState::Count { n } => {
            w.u8(0);
            w.u64(*n);
        }
        SlotState::Latest { ts } => {
            w.u8(1);
            w.usize(ts.len());
            for t in ts {
                w.i64(*t);
            }
        }
        SlotState::Extreme { ts } => {
            w.u8(2);
            w.opt_i64(*ts);
        }
        SlotState::Then {
            done,
            firsts,
            thens,
        } => {
            w.u8(3);
            w.bool(*done);
            write_keys(w, firsts);
            write_keys(w, thens);
        }
        SlotState::NotFollowed { latest, thens } => {
            w.u8(4);
            write_opt_key(w, *latest);
            write_keys(w, thens);
        }
    }
}

fn read_slot(r: &mut Reader<'_>) -> Result<SlotState, DecodeError> {
    Ok(match r.u8()? {
        0 => SlotState::Count { n: r.u64()? },
        1 => {
            let n = r.count()?;
            let mut ts = Stamps::with_capacity(n);
            for _ in 0..n {
                ts.push(r.i64()?);
            }
            SlotState::Latest { ts }
        }
        2 => SlotState::Extreme { ts: r.opt_i64()? },
        3 => SlotState::Then {
            done: r.bool()?,
            firsts: read_keys(r)?,
            thens: read_keys(r)?,
        },
        4 => SlotState::NotFollowed {
            latest: read_opt_key(r)?,
            thens: read_keys(r)?,
        },
        _ => return Err(DecodeError::Corrupt("audience slot tag")),
    })
}

fn write_computed<'b>(w: &mut Writer<'_, 'b>, s: &'b ComputedState) {
    match s {
        ComputedState::Count { n } => {
            w.u8(0);
            w.u64(*n);
        }
        ComputedState::Sum {
            sum: Sum { int, frac, n },
        } => {
            w.u8(1);
            w.i64(*int);
            w.f64(*frac);
            w.u64(*n);
        }
        ComputedState::Extreme { v } => {
            w.u8(2);
            match v {
                None => w.u8(0),
                Some(x) => {
                    w.u8(1);
                    w.f64(*x);
                }
            }
        }
        ComputedState::Pick { at, v } => {
            w.u8(3);
            write_opt_key(w, *at);
            w.value(v);
        }
        ComputedState::Frequency { counts } => {
            w.u8(4);
            w.usize(counts.len());
            for (k, n) in counts {
                w.istr(k);
                w.u64(*n);
            }
        }
        ComputedState::Recent { latest } => {
            w.u8(5);
            w.usize(latest.len());
            for (k, at) in latest {
                w.istr(k);
                w.key(*at);
            }
        }
        ComputedState::Staircase { points } => {
            w.u8(6);
            w.usize(points.len());
            for (t, x) in points {
                w.i64(*t);
                w.f64(*x);
            }
        }
        ComputedState::Window { entries } => {
            w.u8(7);
            w.usize(entries.len());
            for (k, v) in entries {
                w.key(*k);
                w.value(v);
            }
        }
    }
}

fn read_computed(r: &mut Reader<'_>) -> Result<ComputedState, DecodeError> {
    Ok(match r.u8()? {
        0 => ComputedState::Count { n: r.u64()? },
        1 => ComputedState::Sum {
            sum: Sum {
                int: r.i64()?,
                frac: r.f64()?,
                n: r.u64()?,
            },
        },
        2 => ComputedState::Extreme {
            v: match r.u8()? {
                0 => None,
                1 => Some(r.f64()?),
                _ => return Err(DecodeError::Corrupt("option")),
            },
        },
        3 => ComputedState::Pick {
            at: read_opt_key(r)?,
            v: r.value()?,
        },
        4 => ComputedState::Frequency {
            counts: map(r, |r| Ok((r.istr()?, r.u64()?)))?,
        },
        5 => ComputedState::Recent {
            latest: map(r, |r| Ok((r.istr()?, r.key()?)))?,
        },
        6 => {
            let n = r.count()?;
            let mut points = Vec::with_capacity(n);
            for _ in 0..n {
                points.push((r.i64()?, r.f64()?));
            }
            ComputedState::Staircase { points }
        }
        7 => {
            let n = r.count()?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push((r.key()?, r.value()?));
            }
            ComputedState::Window { entries }
        }
        _ => return Err(DecodeError::Corrupt("computed state tag")),
    })
}
