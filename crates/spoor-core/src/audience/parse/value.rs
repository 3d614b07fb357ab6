//! Event selectors, where-clauses, comparisons and values: the leaves of the grammar.

use super::super::ast::*;
use super::super::compare::parse_date;
use super::super::error::ParseError;
use super::super::lex::Tok;
use super::{Parser, COMPARISON, LITERAL, SELECTOR};
use crate::event::EventType;

impl Parser<'_> {
    pub(super) fn duration(&mut self) -> Result<Duration, ParseError> {
        match self.peek() {
            Tok::Duration(d) => {
                let d = *d;
                self.bump();
                Ok(d)
            }
            _ => Err(self.err("a duration, e.g. `30m`, `2h` or `7d`")),
        }
    }

    pub(super) fn selector(&mut self) -> Result<EventSelector, ParseError> {
        let (kind, name) = match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                (Some(EventType::Track), Some(s))
            }
            Tok::Word(w) if w == "any" => {
                self.bump();
                self.expect_word("event")?;
                (None, self.opt_str())
            }
            Tok::Word(w) => match EventType::parse(&w) {
                Some(k) => {
                    self.bump();
                    (Some(k), self.opt_str())
                }
                None => return Err(self.err(SELECTOR)),
            },
            _ => return Err(self.err(SELECTOR)),
        };
        let filter = if self.eat_word("where") {
            self.in_where = true;
            let c = if self.peek() == &Tok::LParen {
                self.prop_unary()
            } else {
                self.prop_cond()
            };
            self.in_where = false;
            Some(c?)
        } else {
            None
        };
        Ok(EventSelector { kind, name, filter })
    }

    pub(super) fn opt_str(&mut self) -> Option<String> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Some(s)
            }
            _ => None,
        }
    }

    pub(super) fn prop_or(&mut self) -> Result<PropCond, ParseError> {
        let mut any = vec![self.prop_and()?];
        while self.eat_word("or") {
            any.push(self.prop_and()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            PropCond::Or { any }
        })
    }

    pub(super) fn prop_and(&mut self) -> Result<PropCond, ParseError> {
        let mut all = vec![self.prop_unary()?];
        while self.eat_word("and") {
            all.push(self.prop_unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            PropCond::And { all }
        })
    }

    pub(super) fn prop_unary(&mut self) -> Result<PropCond, ParseError> {
        self.enter()?;
        let c = if self.eat_word("not") {
            PropCond::Not {
                cond: Box::new(self.prop_unary()?),
            }
        } else if self.peek() == &Tok::LParen {
            self.bump();
            let c = self.prop_or()?;
            self.expect(Tok::RParen, "`)`, `and` or `or`")?;
            c
        } else {
            self.prop_cond()?
        };
        self.depth -= 1;
        Ok(c)
    }

    pub(super) fn prop_cond(&mut self) -> Result<PropCond, ParseError> {
        let path = self.path("a property path (e.g. `product.category`) or `(`")?;
        Ok(PropCond::Property {
            path,
            cmp: self.comparison()?,
        })
    }

    /// A bare word or a quoted string (for names with spaces).
    pub(super) fn path(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Word(w) | Tok::Str(w) if !w.is_empty() => {
                self.bump();
                Ok(w)
            }
            _ => Err(self.err(what)),
        }
    }

    pub(super) fn comparison(&mut self) -> Result<Comparison, ParseError> {
        match self.peek().clone() {
            Tok::Op(op) => {
                self.bump();
                let value = self.literal()?;
                Ok(match op {
                    "=" => Comparison::Eq { value },
                    "!=" => Comparison::Ne { value },
                    "<" => Comparison::Lt { value },
                    "<=" => Comparison::Le { value },
                    ">" => Comparison::Gt { value },
                    _ => Comparison::Ge { value },
                })
            }
            Tok::Word(w) => match w.as_str() {
                "contains" => {
                    self.bump();
                    Ok(Comparison::Contains {
                        value: self.literal()?,
                    })
                }
                "starts" => {
                    self.bump();
                    self.expect_word("with")?;
                    match self.peek().clone() {
                        Tok::Str(value) => {
                            self.bump();
                            Ok(Comparison::StartsWith { value })
                        }
                        _ => Err(self.err("a \"string\"")),
                    }
                }
                "in" => {
                    self.bump();
                    self.expect(Tok::LBracket, "`[`")?;
                    let mut values = Vec::new();
                    if self.peek() != &Tok::RBracket {
                        values.push(self.literal()?);
                        while self.peek() == &Tok::Comma {
                            self.bump();
                            values.push(self.literal()?);
                        }
                    }
                    self.expect(Tok::RBracket, "`,` or `]`")?;
                    Ok(Comparison::In { values })
                }
                "exists" => {
                    self.bump();
                    Ok(Comparison::Exists)
                }
                "is" => {
                    self.bump();
                    self.expect_word("empty")?;
                    Ok(Comparison::IsEmpty)
                }
                _ => Err(self.err(COMPARISON)),
            },
            _ => Err(self.err(COMPARISON)),
        }
    }

    pub(super) fn literal(&mut self) -> Result<Literal, ParseError> {
        match self.peek().clone() {
            Tok::Number(n) => {
                self.bump();
                Ok(Literal::Number(n))
            }
            Tok::Minus => {
                self.bump();
                match self.peek() {
                    Tok::Number(n) => {
                        let n = -*n;
                        self.bump();
                        Ok(Literal::Number(n))
                    }
                    _ => Err(self.err("a number")),
                }
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Literal::String(s))
            }
            Tok::Word(w) if w == "true" || w == "false" => {
                self.bump();
                Ok(Literal::Bool(w == "true"))
            }
            Tok::Word(w) if w == "now" && self.in_where => Err(self.err(
                "a value without `now` (a where clause is matched when the event arrives; \
                 use `within` for recency)",
            )),
            Tok::Word(w) if w == "now" || w == "date" => Ok(Literal::Time(self.time_ref()?)),
            _ => Err(self.err(LITERAL)),
        }
    }

    pub(super) fn time_ref(&mut self) -> Result<TimeRef, ParseError> {
        if self.eat_word("now") {
            let sign = match self.peek() {
                Tok::Plus => 1,
                Tok::Minus => -1,
                _ => return Ok(TimeRef::Now(0)),
            };
            self.bump();
            let d = self.duration()?;
            return Ok(TimeRef::Now(sign * d.ms()));
        }
        if self.eat_word("date") {
            let t = self.tok().clone();
            if let Tok::Str(s) = &t.tok {
                if let Some(ms) = parse_date(s) {
                    self.bump();
                    return Ok(TimeRef::Date(ms));
                }
            }
            return Err(self.err("a date in quotes, \"2024-01-01\" or RFC 3339"));
        }
        Err(self.err("a time (now, now - 7d, now + 1h, date \"2024-01-01\")"))
    }
}
