//! [`Rule`] → canonical text. Parsing the printed text gives back the same rule, so the text
//! form is a lossless view of the JSON form (and two equal rules print identically, which is
//! what makes rules diffable).

use super::ast::*;
use super::lex::{is_word_char, is_word_start};
use crate::event::EventType;
use chrono::{DateTime, SecondsFormat};
use std::fmt::{self, Display, Formatter, Write};

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match self {
            Rule::And { all } => join(f, all, " and ", |r| {
                matches!(r, Rule::And { .. } | Rule::Or { .. })
            }),
            Rule::Or { any } => join(f, any, " or ", |r| matches!(r, Rule::Or { .. })),
            Rule::Not { rule } => {
                f.write_str("not ")?;
                paren(
                    f,
                    rule,
                    matches!(**rule, Rule::And { .. } | Rule::Or { .. }),
                )
            }
            Rule::Trait { path, cmp } => write!(f, "trait {} {cmp}", Name(path)),
            Rule::Computed { name, cmp } => write!(f, "computed {} {cmp}", Name(name)),
            Rule::GroupTrait { path, cmp } => write!(f, "group trait {} {cmp}", Name(path)),
            Rule::Utm { field, cmp } => {
                let field = match field {
                    UtmField::Source => "source",
                    UtmField::Medium => "medium",
                    UtmField::Campaign => "campaign",
                    UtmField::Content => "content",
                    UtmField::Term => "term",
                };
                write!(f, "utm {field} {cmp}")
            }
            Rule::Device { field, cmp } => {
                let field = match field {
                    DeviceField::Type => "type",
                    DeviceField::Os => "os",
                    DeviceField::Browser => "browser",
                };
                write!(f, "device {field} {cmp}")
            }
            Rule::InAudience { name } => write!(f, "in audience {}", Quoted(name)),
            Rule::Consented { purpose } => write!(f, "consented to {}", Quoted(purpose)),
            Rule::Performed {
                event,
                count,
                within,
            } => {
                write!(f, "performed {event}")?;
                let (words, n) = match count {
                    CountOp::AtLeast(1) => ("", 0),
                    CountOp::AtLeast(n) => ("at least", *n),
                    CountOp::AtMost(n) => ("at most", *n),
                    CountOp::Exactly(n) => ("exactly", *n),
                };
                if !words.is_empty() {
                    let unit = if n == 1 { "time" } else { "times" };
                    write!(f, " {words} {n} {unit}")?;
                }
                if let Some(w) = within {
                    write!(f, " within {w}")?;
                }
                Ok(())
            }
            Rule::FirstLast {
                which,
                event,
                order,
                time,
            } => {
                let which = match which {
                    Which::First => "first",
                    Which::Last => "last",
                };
                let order = match order {
                    Order::Before => "before",
                    Order::After => "after",
                };
                write!(f, "{which} performed {event} {order} {time}")
            }
            Rule::Then {
                first,
                then,
                within,
            } => write!(f, "performed {first} then {then} within {within}"),
            Rule::NotFollowed {
                first,
                then,
                within,
            } => write!(
                f,
                "performed {first} and not followed by {then} within {within}"
            ),
        }
    }
}

fn paren<T: Display>(f: &mut Formatter, x: &T, wrap: bool) -> fmt::Result {
    if wrap {
        write!(f, "({x})")
    } else {
        write!(f, "{x}")
    }
}

fn join<T: Display>(
    f: &mut Formatter,
    items: &[T],
    sep: &str,
    wrap: impl Fn(&T) -> bool,
) -> fmt::Result {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        paren(f, x, wrap(x))?;
    }
    Ok(())
}

impl Display for PropCond {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match self {
            PropCond::And { all } => join(f, all, " and ", |c| {
                matches!(c, PropCond::And { .. } | PropCond::Or { .. })
            }),
            PropCond::Or { any } => join(f, any, " or ", |c| matches!(c, PropCond::Or { .. })),
            PropCond::Not { cond } => {
                f.write_str("not ")?;
                paren(
                    f,
                    cond,
                    matches!(**cond, PropCond::And { .. } | PropCond::Or { .. }),
                )
            }
            PropCond::Property { path, cmp } => write!(f, "{} {cmp}", Name(path)),
        }
    }
}

impl Display for EventSelector {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match (&self.kind, &self.name) {
            (Some(EventType::Track), Some(n)) => write!(f, "{}", Quoted(n))?,
            (Some(k), Some(n)) => write!(f, "{} {}", k.as_str(), Quoted(n))?,
            (Some(k), None) => f.write_str(k.as_str())?,
            (None, Some(n)) => write!(f, "any event {}", Quoted(n))?,
            (None, None) => f.write_str("any event")?,
        }
        match &self.filter {
            None => Ok(()),
            Some(c @ PropCond::Property { .. }) => write!(f, " where {c}"),
            Some(c) => write!(f, " where ({c})"),
        }
    }
}

impl Display for Comparison {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match self {
            Comparison::Eq { value } => write!(f, "= {value}"),
            Comparison::Ne { value } => write!(f, "!= {value}"),
            Comparison::Lt { value } => write!(f, "< {value}"),
            Comparison::Le { value } => write!(f, "<= {value}"),
            Comparison::Gt { value } => write!(f, "> {value}"),
            Comparison::Ge { value } => write!(f, ">= {value}"),
            Comparison::Contains { value } => write!(f, "contains {value}"),
            Comparison::StartsWith { value } => write!(f, "starts with {}", Quoted(value)),
            Comparison::In { values } => {
                f.write_str("in [")?;
                join(f, values, ", ", |_| false)?;
                f.write_char(']')
            }
            Comparison::Exists => f.write_str("exists"),
            Comparison::IsEmpty => f.write_str("is empty"),
        }
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::String(s) => write!(f, "{}", Quoted(s)),
            Literal::Time(t) => write!(f, "{t}"),
        }
    }
}

impl Display for TimeRef {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match *self {
            TimeRef::Now(0) => f.write_str("now"),
            TimeRef::Now(off) => {
                let sign = if off < 0 { '-' } else { '+' };
                write!(f, "now {sign} {}", Duration(off.unsigned_abs()))
            }
            TimeRef::Date(ms) => match DateTime::from_timestamp_millis(ms) {
                Some(t) if ms.rem_euclid(86_400_000) == 0 => {
                    write!(f, "date \"{}\"", t.format("%Y-%m-%d"))
                }
                Some(t) => write!(
                    f,
                    "date \"{}\"",
                    t.to_rfc3339_opts(SecondsFormat::Millis, true)
                ),
                None => write!(f, "date \"{ms}\""),
            },
        }
    }
}

/// A name printed bare when it lexes as one word, else quoted.
struct Name<'a>(&'a str);

impl Display for Name<'_> {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        let mut chars = self.0.chars();
        // `and`, `or` and `not` are quoted so a property named so never reads as logic.
        let bare = chars.next().is_some_and(is_word_start)
            && chars.all(is_word_char)
            && !matches!(self.0, "and" | "or" | "not");
        if bare {
            f.write_str(self.0)
        } else {
            write!(f, "{}", Quoted(self.0))
        }
    }
}

/// A string in JSON quoting (which the lexer reads back).
struct Quoted<'a>(&'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut Formatter) -> fmt::Result {
        match serde_json::to_string(self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}
