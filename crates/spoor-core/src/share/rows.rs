//! Members to rows: picks the identifiers, hashes them, and writes CSV (through the `csv`
//! crate, which quotes commas, quotes and newlines in trait values per RFC 4180) or NDJSON
//! into a buffer the caller drains page by page, so a file of any size streams.

use super::hash::{email_key, phone_key};
use super::{Action, ExportSpec, Format, Identifiers};
use crate::identity::{LinkedIdentifier, ProfileId};
use crate::profile::model::Profile;
use serde_json::Value;

/// One member to write: what the state store holds about it now.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub id: ProfileId,
    pub action: Action,
    /// The profile's identifiers (for a merged-away profile: those it brought).
    pub identifiers: &'a [LinkedIdentifier],
    /// The profile, for traits; `None` writes empty trait cells.
    pub profile: Option<&'a Profile>,
}

/// Writes rows into an internal buffer; [`RowWriter::take`] hands out what was written.
pub struct RowWriter {
    spec: ExportSpec,
    csv: csv::Writer<Vec<u8>>,
    json: Vec<u8>,
    rows: u64,
}

impl RowWriter {
    /// A writer; a CSV one has its header row written already.
    pub fn new(spec: ExportSpec) -> Result<Self, String> {
        let mut csv = csv_writer();
        if spec.format == Format::Csv {
            csv.write_record(spec.columns())
                .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            spec,
            csv,
            json: Vec::new(),
            rows: 0,
        })
    }

    /// Rows written so far (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the member's row(s) and returns how many.
    pub fn write(&mut self, m: &Member) -> Result<usize, String> {
        let hashed = self.spec.hashed;
        let user_id = pick(m.identifiers, "user_id", |v| Some(v.to_owned()));
        let emails = pick(m.identifiers, "email", |v| email_key(v, hashed));
        let phones = pick(m.identifiers, "phone", |v| phone_key(v, hashed));
        let n = match self.spec.identifiers {
            Identifiers::First => 1,
            Identifiers::All => emails.len().max(phones.len()).max(1),
        };
        let traits: Vec<Option<&Value>> = self
            .spec
            .traits
            .iter()
            .map(|t| m.profile.and_then(|p| p.trait_value(t)))
            .collect();
        for i in 0..n {
            let cells = Cells {
                action: m.action,
                id: m.id.to_string(),
                user_id: user_id.first().map(String::as_str),
                email: emails.get(i).map(String::as_str),
                phone: phones.get(i).map(String::as_str),
                traits: &traits,
            };
            match self.spec.format {
                Format::Csv => self.csv_row(&cells)?,
                Format::Ndjson => self.json_row(&cells)?,
            }
        }
        self.rows += n as u64;
        Ok(n)
    }

    /// What was written since the last call.
    pub fn take(&mut self) -> Result<Vec<u8>, String> {
        match self.spec.format {
            Format::Csv => {
                // `into_inner` flushes; the writer keeps no state between rows.
                std::mem::replace(&mut self.csv, csv_writer())
                    .into_inner()
                    .map_err(|e| e.to_string())
            }
            Format::Ndjson => Ok(std::mem::take(&mut self.json)),
        }
    }

    fn csv_row(&mut self, c: &Cells) -> Result<(), String> {
        let mut rec: Vec<String> = vec![
            c.action.as_str().to_owned(),
            c.id.clone(),
            c.user_id.unwrap_or_default().to_owned(),
            c.email.unwrap_or_default().to_owned(),
            c.phone.unwrap_or_default().to_owned(),
        ];
        rec.extend(c.traits.iter().map(|v| match v {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }));
        self.csv.write_record(&rec).map_err(|e| e.to_string())
    }

    /// One JSON object, its fields in column order (a `Map` would sort them), traits
    /// nested in the order asked for.
    fn json_row(&mut self, c: &Cells) -> Result<(), String> {
        let cols = self.spec.columns();
        let out = &mut self.json;
        let field = |out: &mut Vec<u8>, first: bool, k: &str, v: &dyn erased::Json| {
            out.push(if first { b'{' } else { b',' });
            serde_json::to_writer(&mut *out, k)?;
            out.push(b':');
            v.write(out)
        };
        let fixed: [(&str, &dyn erased::Json); 5] = [
            (cols[0], &c.action.as_str()),
            (cols[1], &c.id.as_str()),
            (cols[2], &c.user_id),
            (cols[3], &c.email),
            (cols[4], &c.phone),
        ];
        for (i, (k, v)) in fixed.into_iter().enumerate() {
            field(out, i == 0, k, v).map_err(|e| e.to_string())?;
        }
        if !self.spec.traits.is_empty() {
            out.extend_from_slice(b",\"traits\":");
            for (i, (k, v)) in self.spec.traits.iter().zip(c.traits).enumerate() {
                let v: &dyn erased::Json = match v {
                    Some(v) => v,
                    None => &Value::Null,
                };
                field(out, i == 0, k, v).map_err(|e| e.to_string())?;
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// Values of different types written as JSON through one `dyn` call.
mod erased {
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
            serde_json::to_writer(out, self)
        }
    }
}

/// CSV with `\n` line ends (the `csv` crate quotes fields holding separators, quotes or
/// line breaks, doubling quotes).
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

/// The cells of one row.
struct Cells<'a> {
    action: Action,
    id: String,
    user_id: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    traits: &'a [Option<&'a Value>],
}

/// The values of identifiers of `kind` through `key`, earliest linked first (then by log
/// position and value, so the order is total), unusable and repeated ones left out.
fn pick(ids: &[LinkedIdentifier], kind: &str, key: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut of_kind: Vec<&LinkedIdentifier> = ids
        .iter()
        .filter(|l| l.identifier.kind.as_str() == kind)
        .collect();
    of_kind.sort_by(|a, b| {
        (a.first_seen_ms, a.since_seq, &a.identifier.value).cmp(&(
            b.first_seen_ms,
            b.since_seq,
            &b.identifier.value,
        ))
    });
    let mut out: Vec<String> = Vec::with_capacity(of_kind.len());
    for l in of_kind {
        if let Some(k) = key(&l.identifier.value) {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    out
}
