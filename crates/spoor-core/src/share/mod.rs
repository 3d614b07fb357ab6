//! Sharing audiences with ad platforms and e-mail tools: the pure half of an audience file
//! export — which columns a file has, how a member becomes rows, how identifiers are
//! normalised and hashed, and how a stretch of the membership change feed folds into
//! `add`/`remove` rows. Reading members and streaming the file is the server's
//! (`api/exports.rs`); nothing here does I/O.
//!
//! # The file
//! One row per member (or several, see [`Identifiers::All`]), columns in this order:
//!
//! | column | what |
//! | --- | --- |
//! | `action` | `add`, or `remove` in a delta export (a full export only adds) |
//! | `id` | the Spoor profile id |
//! | `user_id` | the profile's `user_id` identifier, plain (it is the customer's own key) |
//! | `email_sha256` / `email` | the e-mail, normalised, hashed unless `hashed=false` |
//! | `phone_sha256` / `phone` | the phone in E.164, normalised, hashed unless `hashed=false` |
//! | each selected trait | its current value (strings as they are, other values as JSON) |
//!
//! NDJSON lines carry the same fields, with the traits in a nested `traits` object (so a
//! trait cannot shadow a fixed field). The CSV header names the traits as they are and
//! therefore refuses trait names equal to a fixed column.
//!
//! # Why hash this way
//! Google Customer Match and Meta Custom Audiences match on SHA-256 of the *normalised*
//! value, as lowercase hex: e-mail trimmed and lowercased, phone in E.164 with its `+`.
//! Spoor's own identity normalisation ([`Normalize`]) already produces exactly that, so the
//! export re-applies it (a no-op for stored identifiers, a safety net for old data) and
//! hashes the result. A phone stored without a country code (no `default_country_code`
//! configured) is left out: its hash could never match a platform's E.164 hash. Provider
//! tricks (Gmail dots, `+tags`) are kept, as in identity: the platforms hash what they are
//! given, and stripping them would be a guess.
//!
//! [`Normalize`]: crate::identity::Normalize

mod delta;
mod hash;
mod rows;

#[cfg(test)]
mod tests;

pub use delta::DeltaFold;
pub use hash::{email_key, phone_key, sha256_hex};
pub use rows::{Member, RowWriter};

use std::fmt;

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row: what upload forms take.
    Csv,
    /// One JSON object a line: what scripts and pipelines take.
    Ndjson,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Ndjson => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }
}

/// What a row asks of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a profile with several e-mails or phones is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Identifiers {
    /// One row per profile, with its earliest-linked e-mail and phone. The default: one
    /// person is one row, so row counts are member counts and match rates are honest.
    #[default]
    First,
    /// A row per e-mail/phone pair in linking order (the first row as in `First`, then the
    /// others, the shorter list padded with empty cells): every address gets its chance to
    /// match, at the cost of the same person appearing more than once.
    All,
}

impl Identifiers {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "first" => Some(Self::First),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// The fixed columns, in file order (the plain names when not hashed).
pub const FIXED_HASHED: [&str; 5] = ["action", "id", "user_id", "email_sha256", "phone_sha256"];
pub const FIXED_PLAIN: [&str; 5] = ["action", "id", "user_id", "email", "phone"];

/// What an export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    pub format: Format,
    /// SHA-256 hex of e-mail and phone (the default), or the normalised values.
    pub hashed: bool,
    /// Traits to add as columns, in this order.
    pub traits: Vec<String>,
    pub identifiers: Identifiers,
}

impl ExportSpec {
    /// A spec, or why it is not one (an empty, duplicate or reserved trait name).
    pub fn new(
        format: Format,
        hashed: bool,
        traits: Vec<String>,
        identifiers: Identifiers,
    ) -> Result<Self, String> {
        let fixed = if hashed { FIXED_HASHED } else { FIXED_PLAIN };
        for (i, t) in traits.iter().enumerate() {
            if t.is_empty() {
                return Err("an empty trait name".into());
            }
            if traits[..i].contains(t) {
                return Err(format!("trait {t:?} is listed twice"));
            }
            if format == Format::Csv && (fixed.contains(&t.as_str()) || t == "traits") {
                return Err(format!(
                    "trait {t:?} has the name of a fixed column; export it as NDJSON"
                ));
            }
        }
        Ok(Self {
            format,
            hashed,
            traits,
            identifiers,
        })
    }

    /// The column names: the fixed ones, then the traits.
    pub fn columns(&self) -> Vec<&str> {
        let fixed = if self.hashed {
            FIXED_HASHED
        } else {
            FIXED_PLAIN
        };
        fixed
            .into_iter()
            .chain(self.traits.iter().map(String::as_str))
            .collect()
    }
}
