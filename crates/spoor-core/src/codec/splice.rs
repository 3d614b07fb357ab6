//! Replacing audience entries of an encoded activation (the V3 layout of `activation`)
//! without decoding the rest: what a backfill that adds audiences does to every person
//! it concerns (see `audience::LazyActivation`).

use super::activation::{smallest, write_entry, StateOut, HAS_NEXT, HAS_STATE, IS_MEMBER};
use super::{DecodeError, Reader, Writer};
use crate::audience::Activation;

/// An encoded activation (V3 layout) read as far as replacing audience entries needs:
/// the timers, and each audience's name, membership, next change and state bytes. No
/// state is decoded.
#[derive(Debug)]
pub struct ActivationView<'a> {
    pub revision: u64,
    pub next_timer_ms: Option<i64>,
    pub computed_next: Option<i64>,
    /// The computed traits' list with its length prefix, as written.
    computed: &'a [u8],
    /// By name, ascending.
    pub audiences: Vec<AudienceEntry<'a>>,
}

/// One audience's entry in an [`ActivationView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceEntry<'a> {
    pub name: &'a str,
    pub member: Option<i64>,
    pub next: Option<i64>,
    /// The encoded state.
    pub state: Option<&'a [u8]>,
}

impl<'a> ActivationView<'a> {
    /// Reads the framing of [`encode_activation`]'s form (every length is checked against
    /// the bytes; the states are not decoded).
    pub fn parse(b: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let revision = r.u64()?;
        let next_timer_ms = r.opt_i64()?;
        let computed_next = r.opt_i64()?;
        let from = r.pos();
        r.prefixed()?;
        let computed = &b[from..r.pos()];
        let mut audiences: Vec<AudienceEntry<'a>> = Vec::new();
        loop {
            let flags = r.u8()?;
            if flags == 0 {
                break;
            }
            let name = r.str_ref()?;
            if audiences.last().is_some_and(|e| e.name >= name) {
                return Err(DecodeError::Corrupt("audience entries out of order"));
            }
            let member = (flags & IS_MEMBER != 0).then(|| r.i64()).transpose()?;
            let next = (flags & HAS_NEXT != 0).then(|| r.i64()).transpose()?;
            let state = (flags & HAS_STATE != 0).then(|| r.prefixed()).transpose()?;
            audiences.push(AudienceEntry {
                name,
                member,
                next,
                state,
            });
        }
        r.finish()?;
        Ok(Self {
            revision,
            next_timer_ms,
            computed_next,
            computed,
            audiences,
        })
    }

    /// The entry of audience `name`.
    pub fn entry(&self, name: &str) -> Option<&AudienceEntry<'a>> {
        self.audiences
            .binary_search_by(|e| e.name.cmp(name))
            .ok()
            .map(|i| &self.audiences[i])
    }

    /// The activation with the entries of the audiences in `names` replaced by what
    /// `with` holds for them (state, membership, next change; nothing there removes the
    /// entry), every other byte copied, and the person's timer recomputed as the earliest
    /// next change of the audiences and the computed traits. Returns the bytes and that
    /// timer. Equal to encoding the decoded activation changed the same way.
    pub fn splice(&self, names: &[&str], with: &Activation) -> (Vec<u8>, Option<i64>) {
        let mut names: Vec<&str> = names.to_vec();
        names.sort_unstable();
        names.dedup();
        let mut timer = self.computed_next;
        let mut old = self.audiences.iter().peekable();
        let mut new = names.iter().copied().peekable();
        // The header's timer is only known at the end: the entries go to a second buffer.
        let mut entries = Vec::with_capacity(out_capacity(self));
        let mut e = Writer::new(&mut entries);
        while let Some(name) = smallest([old.peek().map(|x| x.name), new.peek().copied()]) {
            let was = old.next_if(|x| x.name == name);
            if new.next_if(|n| *n == name).is_some() {
                let state = with.audiences.get(name).map(|s| StateOut::Decoded(s));
                let member = with.members.get(name).copied();
                let next = with.next.get(name).copied();
                if state.is_some() || member.is_some() || next.is_some() {
                    write_entry(&mut e, name, state, member, next);
                }
                timer = timer.into_iter().chain(next).min();
            } else if let Some(x) = was {
                let state = x.state.map(StateOut::Encoded);
                write_entry(&mut e, x.name, state, x.member, x.next);
                timer = timer.into_iter().chain(x.next).min();
            }
        }
        e.u8(0);
        let mut out = Vec::with_capacity(self.computed.len() + entries.len() + 24);
        let mut w = Writer::new(&mut out);
        w.u64(self.revision);
        w.opt_i64(timer);
        w.opt_i64(self.computed_next);
        out.extend_from_slice(self.computed);
        out.extend_from_slice(&entries);
        (out, timer)
    }
}

fn out_capacity(v: &ActivationView<'_>) -> usize {
    v.audiences
        .iter()
        .map(|e| e.name.len() + e.state.map_or(0, <[u8]>::len) + 24)
        .sum::<usize>()
        + 64
}
