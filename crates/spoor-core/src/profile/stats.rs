//! Per-profile counters: by source, by marketing channel, by device.
//!
//! Every statistic merges as a join (counts add, first/last take min/max, and any "which
//! value" choice is made by a total order on `(timestamp, seq)`), so a profile's statistics do
//! not depend on the order its events were applied in or on how merged profiles were split.

use crate::event::{UserAgentInfo, Utm};
use serde::{Deserialize, Serialize};

/// Events from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStat {
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl SourceStat {
    pub(crate) fn new(ms: i64) -> Self {
        Self {
            count: 1,
            first_ms: ms,
            last_ms: ms,
        }
    }
    pub(crate) fn add(&mut self, ms: i64) {
        self.merge(Self::new(ms));
    }
    pub(crate) fn merge(&mut self, o: Self) {
        self.count += o.count;
        self.first_ms = self.first_ms.min(o.first_ms);
        self.last_ms = self.last_ms.max(o.last_ms);
    }
}

/// Events that arrived through one channel (UTM source / medium / campaign).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStat {
    /// The full UTM of the *first* event of the channel (first touch), so `content` and
    /// `term`, which are not part of the key, are still visible.
    pub utm: Utm,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The seq of the first event, so "first" is a total order even on equal timestamps.
    pub first_seq: u64,
}

impl ChannelStat {
    pub(crate) fn new(utm: &Utm, ms: i64, seq: u64) -> Self {
        Self {
            utm: utm.clone(),
            count: 1,
            first_ms: ms,
            last_ms: ms,
            first_seq: seq,
        }
    }
    pub(crate) fn add(&mut self, utm: &Utm, ms: i64, seq: u64) {
        self.count += 1;
        self.last_ms = self.last_ms.max(ms);
        if (ms, seq) < (self.first_ms, self.first_seq) {
            self.first_ms = ms;
            self.first_seq = seq;
            self.utm = utm.clone();
        }
    }
    pub(crate) fn merge(&mut self, o: Self) {
        self.count += o.count;
        self.last_ms = self.last_ms.max(o.last_ms);
        if (o.first_ms, o.first_seq) < (self.first_ms, self.first_seq) {
            self.first_ms = o.first_ms;
            self.first_seq = o.first_seq;
            self.utm = o.utm;
        }
    }
}

/// Events from one kind of device (device type / OS / browser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStat {
    pub device_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    /// Versions as of the *latest* event (people upgrade; the key does not include them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_version: Option<String>,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// The seq of the latest event, so "latest" is a total order even on equal timestamps.
    pub last_seq: u64,
}

impl DeviceStat {
    pub(crate) fn new(ua: &UserAgentInfo, ms: i64, seq: u64) -> Self {
        Self {
            device_type: ua.device_type.clone(),
            os: ua.os.clone(),
            browser: ua.browser.clone(),
            os_version: ua.os_version.clone(),
            browser_version: ua.browser_version.clone(),
            count: 1,
            first_ms: ms,
            last_ms: ms,
            last_seq: seq,
        }
    }
    pub(crate) fn add(&mut self, ua: &UserAgentInfo, ms: i64, seq: u64) {
        self.count += 1;
        self.first_ms = self.first_ms.min(ms);
        if (ms, seq) > (self.last_ms, self.last_seq) {
            self.last_ms = ms;
            self.last_seq = seq;
            self.os_version = ua.os_version.clone();
            self.browser_version = ua.browser_version.clone();
        }
    }
    pub(crate) fn merge(&mut self, o: Self) {
        self.count += o.count;
        self.first_ms = self.first_ms.min(o.first_ms);
        if (o.last_ms, o.last_seq) > (self.last_ms, self.last_seq) {
            self.last_ms = o.last_ms;
            self.last_seq = o.last_seq;
            self.os_version = o.os_version;
            self.browser_version = o.browser_version;
        }
    }
}

/// `source/medium/campaign`, or `None` when all three are missing (a UTM with only
/// `content`/`term` names no channel). Missing parts are empty; `%` and `/` inside a part are
/// percent-escaped so two different channels never share a key.
pub fn channel_key(utm: &Utm) -> Option<String> {
    if utm.source.is_none() && utm.medium.is_none() && utm.campaign.is_none() {
        return None;
    }
    Some(key3(
        utm.source.as_deref(),
        utm.medium.as_deref(),
        utm.campaign.as_deref(),
    ))
}

/// `device_type/os/browser`, escaped like [`channel_key`].
pub fn device_key(ua: &UserAgentInfo) -> String {
    key3(
        Some(&ua.device_type),
        ua.os.as_deref(),
        ua.browser.as_deref(),
    )
}

fn key3(a: Option<&str>, b: Option<&str>, c: Option<&str>) -> String {
    let parts = [a, b, c].map(Option::unwrap_or_default);
    let mut key = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        // Runs up to four times per event: copy whole parts, escape only when needed.
        if !part.contains(['%', '/']) {
            key.push_str(part);
            continue;
        }
        for ch in part.chars() {
            match ch {
                '%' => key.push_str("%25"),
                '/' => key.push_str("%2F"),
                _ => key.push(ch),
            }
        }
    }
    key
}
