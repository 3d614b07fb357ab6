//! The binary profile record: `PROFILE_V2`, then every field of [`Profile`] in declaration
//! order (maps as a count and their entries in key order, so decoding builds each map from
//! sorted input).

use super::activation::{read_activation, write_activation, Layout};
use super::{DecodeError, Reader, Writer, PROFILE_V2, PROFILE_V3};
use crate::audience::LazyActivation;
use crate::consent::{Consent, ConsentRecord, ConsentValue, ConsentVia};
use crate::event::Utm;
use crate::identity::ProfileId;
use crate::profile::{ChannelStat, DeviceStat, Profile, SourceStat, TraitValue};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The record of a profile.
pub fn encode_profile(p: &Profile) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_profile(&mut out, p);
    out
}

/// Appends the record of a profile to `out` (a checkpoint reuses one buffer).
pub fn write_profile(out: &mut Vec<u8>, p: &Profile) {
    let Profile {
        id,
        traits,
        first_seen_ms,
        last_seen_ms,
        event_count,
        event_counts,
        sources,
        channels,
        devices,
        groups,
        consent,
        activation,
    } = p;
    let mut w = Writer::new(out);
    w.u8(PROFILE_V3);
    w.u64(id.raw());
    w.usize(traits.len());
    for (k, t) in traits.iter() {
        let TraitValue {
            value,
            removed,
            set_at_ms,
            seq,
            source_id,
            message_id,
        } = t;
        w.str(k);
        w.value(value);
        w.bool(*removed);
        w.i64(*set_at_ms);
        w.u64(*seq);
        w.istr(source_id);
        w.istr(message_id);
    }
    w.i64(*first_seen_ms);
    w.i64(*last_seen_ms);
    w.u64(*event_count);
    w.usize(event_counts.len());
    for (k, n) in event_counts.iter() {
        w.istr(k);
        w.u64(*n);
    }
    w.usize(sources.len());
    for (k, s) in sources.iter() {
        let SourceStat {
            count,
            first_ms,
            last_ms,
        } = s;
        w.istr(k);
        w.u64(*count);
        w.i64(*first_ms);
        w.i64(*last_ms);
    }
    w.usize(channels.len());
    for (k, c) in channels.iter() {
        let ChannelStat {
            utm,
            count,
            first_ms,
            last_ms,
            first_seq,
        } = c;
        let Utm {
            source,
            medium,
            campaign,
            content,
            term,
        } = utm;
        w.str(k);
        for part in [source, medium, campaign, content, term] {
            w.opt_str(part.as_deref());
        }
        w.u64(*count);
        w.i64(*first_ms);
        w.i64(*last_ms);
        w.u64(*first_seq);
    }
    w.usize(devices.len());
    for (k, d) in devices.iter() {
        let DeviceStat {
            device_type,
            os,
            browser,
            os_version,
            browser_version,
            count,
            first_ms,
            last_ms,
            last_seq,
        } = d;
        w.str(k);
        w.str(device_type);
        for part in [os, browser, os_version, browser_version] {
            w.opt_str(part.as_deref());
        }
        w.u64(*count);
        w.i64(*first_ms);
        w.i64(*last_ms);
        w.u64(*last_seq);
    }
    w.usize(groups.len());
    for (g, ms) in groups.iter() {
        w.str(g);
        w.i64(*ms);
    }
    let Consent { current, history } = &**consent;
    w.usize(current.len());
    for (purpose, r) in current {
        w.istr(purpose);
        write_consent(&mut w, r);
    }
    w.usize(history.len());
    for r in history {
        write_consent(&mut w, r);
    }
    // The tail, on its own (see `activation`): copied when it is still as read.
    match activation.encoded_bytes() {
        Some(b) => out.extend_from_slice(b),
        None => write_activation(&mut Writer::new(out), activation),
    }
}

fn write_consent<'b>(w: &mut Writer<'_, 'b>, r: &'b ConsentRecord) {
    let ConsentRecord {
        purpose,
        value,
        at_ms,
        seq,
        via,
        source_id,
        message_id,
    } = r;
    w.istr(purpose);
    w.u8(match value {
        ConsentValue::Granted => 1,
        ConsentValue::Denied => 0,
    });
    w.i64(*at_ms);
    w.u64(*seq);
    w.u8(match via {
        ConsentVia::Event => 0,
        ConsentVia::Trait => 1,
        ConsentVia::Api => 2,
    });
    w.istr(source_id);
    w.istr(message_id);
}

/// Decodes a binary profile record (see [`encode_profile`]) whole.
pub fn decode_profile(b: &[u8]) -> Result<Profile, DecodeError> {
    read_profile(b, false)
}

/// Decodes a binary profile record, leaving its activation encoded until used
/// ([`LazyActivation`]) when the record's format allows it: for a rewrite of a few audience
/// entries ([`super::ActivationView::splice`], whose parse checks the framing).
pub fn decode_profile_lazy(b: &[u8]) -> Result<Profile, DecodeError> {
    read_profile(b, true)
}

fn read_profile(b: &[u8], lazy: bool) -> Result<Profile, DecodeError> {
    let mut r = Reader::new(b);
    let layout = match r.u8()? {
        PROFILE_V2 => Layout::V2,
        PROFILE_V3 => Layout::V3,
        f => return Err(DecodeError::Format(f)),
    };
    let id = ProfileId::from_raw(r.u64()?);
    let traits = map(&mut r, |r| {
        let k = r.str()?;
        let t = TraitValue {
            value: r.value()?,
            removed: r.bool()?,
            set_at_ms: r.i64()?,
            seq: r.u64()?,
            source_id: r.istr()?,
            message_id: r.istr()?,
        };
        Ok((k, t))
    })?;
    let first_seen_ms = r.i64()?;
    let last_seen_ms = r.i64()?;
    let event_count = r.u64()?;
    let event_counts = map(&mut r, |r| Ok((r.istr()?, r.u64()?)))?;
    let sources = map(&mut r, |r| {
        let k = r.istr()?;
        let s = SourceStat {
            count: r.u64()?,
            first_ms: r.i64()?,
            last_ms: r.i64()?,
        };
        Ok((k, s))
    })?;
    let channels = map(&mut r, |r| {
        let k = r.str()?;
        let utm = Utm {
            source: r.opt_str()?,
            medium: r.opt_str()?,
            campaign: r.opt_str()?,
            content: r.opt_str()?,
            term: r.opt_str()?,
        };
        let c = ChannelStat {
            utm,
            count: r.u64()?,
            first_ms: r.i64()?,
            last_ms: r.i64()?,
            first_seq: r.u64()?,
        };
        Ok((k, c))
    })?;
    let devices = map(&mut r, |r| {
        let k = r.str()?;
        let d = DeviceStat {
            device_type: r.str()?,
            os: r.opt_str()?,
            browser: r.opt_str()?,
            os_version: r.opt_str()?,
            browser_version: r.opt_str()?,
            count: r.u64()?,
            first_ms: r.i64()?,
            last_ms: r.i64()?,
            last_seq: r.u64()?,
        };
        Ok((k, d))
    })?;
    let groups = map(&mut r, |r| Ok((r.str()?, r.i64()?)))?;
    let current = map(&mut r, |r| Ok((r.istr()?, read_consent(r)?)))?;
    let n = r.count()?;
    let mut history = Vec::with_capacity(n);
    for _ in 0..n {
        history.push(read_consent(&mut r)?);
    }
    let activation = match layout {
        Layout::V2 => {
            let a = read_activation(&mut r, Layout::V2)?;
            r.finish()?;
            LazyActivation::from(a)
        }
        // Its framing is parsed by the one who uses the bytes (`ActivationView::parse`,
        // before a splice), not twice.
        Layout::V3 if lazy => LazyActivation::encoded(Arc::from(r.rest())),
        Layout::V3 => LazyActivation::from(super::decode_activation(r.rest())?),
    };
    Ok(Profile {
        id,
        traits: Arc::new(traits),
        first_seen_ms,
        last_seen_ms,
        event_count,
        event_counts: Arc::new(event_counts),
        sources: Arc::new(sources),
        channels: Arc::new(channels),
        devices: Arc::new(devices),
        groups: Arc::new(groups),
        consent: Arc::new(Consent { current, history }),
        activation,
    })
}

fn read_consent(r: &mut Reader<'_>) -> Result<ConsentRecord, DecodeError> {
    Ok(ConsentRecord {
        purpose: r.istr()?,
        value: match r.u8()? {
            1 => ConsentValue::Granted,
            0 => ConsentValue::Denied,
            _ => return Err(DecodeError::Corrupt("consent value")),
        },
        at_ms: r.i64()?,
        seq: r.u64()?,
        via: match r.u8()? {
            0 => ConsentVia::Event,
            1 => ConsentVia::Trait,
            2 => ConsentVia::Api,
            _ => return Err(DecodeError::Corrupt("consent via")),
        },
        source_id: r.istr()?,
        message_id: r.istr()?,
    })
}

/// A map written as a count and its entries in key order.
pub(super) fn map<'a, K: Ord, V>(
    r: &mut Reader<'a>,
    mut entry: impl FnMut(&mut Reader<'a>) -> Result<(K, V), DecodeError>,
) -> Result<BTreeMap<K, V>, DecodeError> {
    let n = r.count()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(entry(r)?);
    }
    // Sorted input: `from_iter` builds the tree in one pass.
    Ok(v.into_iter().collect())
}
