//! Payload mappings and property filters in jq syntax, run by jaq (a maintained jq
//! implementation in Rust) rather than a home-made language: people who write webhook
//! mappings already know jq, and jaq gives them its standard library.
//!
//! A [`Jq`] program is compiled once, when a destination is created or its worker starts,
//! and run per delivery item. Values cross between `serde_json` and jaq as JSON text: it is
//! one serialisation per item, far below the cost of the HTTP request that carries it.

use jaq_core::data::JustLut;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<jaq_core::Native<JustLut<Val>>>;

/// A compiled jq program.
pub struct Jq {
    filter: Filter,
    source: String,
}

impl std::fmt::Debug for Jq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Jq").field(&self.source).finish()
    }
}

/// Longest jq program accepted (mappings are a few lines).
pub const MAX_PROGRAM_BYTES: usize = 16 * 1024;

impl Jq {
    /// Parses and compiles `code`; the error says what is wrong, for the API to return.
    pub fn compile(code: &str) -> Result<Self, String> {
        if code.len() > MAX_PROGRAM_BYTES {
            return Err(format!(
                "the jq program is {} bytes; at most {MAX_PROGRAM_BYTES} are accepted",
                code.len()
            ));
        }
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| format!("jq syntax error: {}", describe_load(&errs)))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let names: Vec<String> = errs
                    .iter()
                    .flat_map(|(_, es)| es.iter().map(|(name, _)| name.to_string()))
                    .collect();
                format!("jq compile error: undefined {}", names.join(", "))
            })?;
        Ok(Self {
            filter,
            source: code.to_owned(),
        })
    }

    /// The program's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on `input`; every output value, in order.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        let text = serde_json::to_vec(input).map_err(|e| e.to_string())?;
        let val = jaq_json::read::parse_single(&text).map_err(|e| e.to_string())?;
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, val)) {
            match r {
                Ok(v) => {
                    let s = v.to_string();
                    let v: Value = serde_json::from_str(&s)
                        .map_err(|e| format!("jq produced a value that is not JSON: {e}"))?;
                    out.push(v);
                }
                Err(e) => return Err(format!("jq error: {}", exn_text(e))),
            }
            if out.len() > 10_000 {
                return Err("jq produced more than 10000 values".into());
            }
        }
        Ok(out)
    }

    /// Runs the program as a mapping: exactly one output value is required.
    pub fn map_one(&self, input: &Value) -> Result<Value, String> {
        let mut v = self.run(input)?;
        match v.len() {
            1 => Ok(v.pop().unwrap_or(Value::Null)),
            n => Err(format!(
                "the mapping produced {n} values; it must produce one"
            )),
        }
    }

    /// Runs the program as a filter: true when its first output is neither false nor null.
    pub fn test(&self, input: &Value) -> Result<bool, String> {
        let v = self.run(input)?;
        Ok(v.first()
            .is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))))
    }
}

fn exn_text(e: jaq_core::Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(err) => err.to_string(),
        Err(_) => "the program halted".into(),
    }
}

fn describe_load<P>(errs: &jaq_core::load::Errors<&str, P>) -> String {
    let mut out = Vec::new();
    for (_, e) in errs {
        match e {
            jaq_core::load::Error::Io(v) => out.extend(v.iter().map(|(p, m)| format!("{p}: {m}"))),
            jaq_core::load::Error::Lex(v) => out.extend(
                v.iter()
                    .map(|(expect, found)| format!("expected {} near {found:?}", expect.as_str())),
            ),
            jaq_core::load::Error::Parse(v) => out.extend(
                v.iter()
                    .map(|(expect, found)| format!("expected {} near {found:?}", expect.as_str())),
            ),
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_filters_and_reports_errors() {
        let m = Jq::compile("{email: .event.message.traits.email, n: (.items | length)}").unwrap();
        let v = m
            .map_one(
                &json!({"event": {"message": {"traits": {"email": "a@b.c"}}}, "items": [1, 2]}),
            )
            .unwrap();
        assert_eq!(v, json!({"email": "a@b.c", "n": 2}));
        let f = Jq::compile(".event.properties.total > 100").unwrap();
        assert!(f
            .test(&json!({"event": {"properties": {"total": 150}}}))
            .unwrap());
        assert!(!f
            .test(&json!({"event": {"properties": {"total": 5}}}))
            .unwrap());
        assert!(Jq::compile("{a: ").unwrap_err().contains("syntax"));
        assert!(Jq::compile("nosuchfn(1)")
            .unwrap_err()
            .contains("undefined"));
        assert!(Jq::compile(".[]").unwrap().map_one(&json!([1, 2])).is_err());
        assert!(Jq::compile("error(\"x\")").unwrap().run(&json!(1)).is_err());
        let s = Jq::compile("map(select(. > 1)) | add").unwrap();
        assert_eq!(s.map_one(&json!([1, 2, 3])).unwrap(), json!(5));
    }

    #[test]
    fn compiled_programs_can_move_between_threads() {
        fn is_send<T: Send + Sync>() {}
        is_send::<Jq>();
    }
}
