//! Text → [`Rule`]: a recursive-descent parser over [`super::lex`] tokens. The grammar is in
//! the module documentation of [`super`].

use super::ast::*;
use super::error::ParseError;
use super::lex::{describe, lex, Tok, Token};

/// Deeper nesting than this is refused, so a hostile rule cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

mod value;

const CONDITION: &str =
    "a condition (trait, computed, group trait, utm, device, in audience, consented to, \
performed, first performed, last performed), `not` or `(`";
const COMPARISON: &str =
    "a comparison (=, !=, <, <=, >, >=, contains, starts with, in [...], exists, is empty)";
const LITERAL: &str =
    "a value (a number, a \"string\", true, false, now, now - 7d, date \"2024-01-01\")";
const SELECTOR: &str = "an event (\"Event Name\", page, screen, track, identify, group, alias, \
or any event)";

/// Where a rule names a computed trait or another audience (for catalog checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: RefKind,
    pub name: String,
    /// Byte offset of the name in the text.
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Computed,
    Audience,
}

/// Parses a rule and lists the names it refers to.
pub fn parse_with_refs(src: &str) -> Result<(Rule, Vec<Reference>), ParseError> {
    let mut p = Parser {
        src,
        toks: lex(src)?,
        pos: 0,
        depth: 0,
        refs: Vec::new(),
        in_where: false,
    };
    let rule = p.or_expr()?;
    if p.peek() != &Tok::Eof {
        return Err(p.err("`and`, `or` or the end of the rule"));
    }
    Ok((rule, p.refs))
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    refs: Vec<Reference>,
    /// Inside a `where` clause `now` is refused: an event is matched once, when it arrives,
    /// so its match must not depend on the evaluation time.
    in_where: bool,
}

impl Parser<'_> {
    fn tok(&self) -> &Token {
        let last = self.toks.len() - 1;
        &self.toks[self.pos.min(last)]
    }
    fn peek(&self) -> &Tok {
        &self.tok().tok
    }
    fn peek_at(&self, n: usize) -> &Tok {
        let last = self.toks.len() - 1;
        &self.toks[(self.pos + n).min(last)].tok
    }
    fn bump(&mut self) -> Token {
        let t = self.tok().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn err(&self, expected: &str) -> ParseError {
        let t = self.tok();
        ParseError::at(
            self.src,
            t.start,
            expected,
            &describe(&self.src[t.start..t.end]),
        )
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }
    fn word_at(&self, n: usize, w: &str) -> bool {
        matches!(self.peek_at(n), Tok::Word(x) if x == w)
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let hit = self.is_word(w);
        if hit {
            self.bump();
        }
        hit
    }
    fn expect_word(&mut self, w: &str) -> Result<(), ParseError> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.err(&format!("`{w}`")))
        }
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), ParseError> {
        if self.peek() == &t {
            self.bump();
            Ok(())
        } else {
            Err(self.err(what))
        }
    }
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(&format!("at most {MAX_DEPTH} levels of nesting")));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Rule, ParseError> {
        let mut any = vec![self.and_expr()?];
        while self.eat_word("or") {
            any.push(self.and_expr()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Rule::Or { any }
        })
    }

    fn and_expr(&mut self) -> Result<Rule, ParseError> {
        let mut all = vec![self.unary()?];
        while self.eat_word("and") {
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Rule::And { all }
        })
    }

    fn unary(&mut self) -> Result<Rule, ParseError> {
        self.enter()?;
        let r = if self.eat_word("not") {
            Rule::Not {
                rule: Box::new(self.unary()?),
            }
        } else if self.peek() == &Tok::LParen {
            self.bump();
            let r = self.or_expr()?;
            self.expect(Tok::RParen, "`)`, `and` or `or`")?;
            r
        } else {
            self.condition()?
        };
        self.depth -= 1;
        Ok(r)
    }

    fn condition(&mut self) -> Result<Rule, ParseError> {
        let Tok::Word(w) = self.peek().clone() else {
            return Err(self.err(CONDITION));
        };
        match w.as_str() {
            "trait" => {
                self.bump();
                let path = self.path("a trait name")?;
                Ok(Rule::Trait {
                    path,
                    cmp: self.comparison()?,
                })
            }
            "computed" => {
                self.bump();
                let offset = self.tok().start;
                let name = self.path("a computed trait name")?;
                self.refs.push(Reference {
                    kind: RefKind::Computed,
                    name: name.clone(),
                    offset,
                });
                Ok(Rule::Computed {
                    name,
                    cmp: self.comparison()?,
                })
            }
            "group" => {
                self.bump();
                self.expect_word("trait")?;
                let path = self.path("a group trait name")?;
                Ok(Rule::GroupTrait {
                    path,
                    cmp: self.comparison()?,
                })
            }
            "utm" => {
                self.bump();
                let field = match self.peek() {
                    Tok::Word(f) => match f.as_str() {
                        "source" => Some(UtmField::Source),
                        "medium" => Some(UtmField::Medium),
                        "campaign" => Some(UtmField::Campaign),
                        "content" => Some(UtmField::Content),
                        "term" => Some(UtmField::Term),
                        _ => None,
                    },
                    _ => None,
                };
                let field = field.ok_or_else(|| {
                    self.err("a UTM field (source, medium, campaign, content, term)")
                })?;
                self.bump();
                Ok(Rule::Utm {
                    field,
                    cmp: self.comparison()?,
                })
            }
            "device" => {
                self.bump();
                let field = match self.peek() {
                    Tok::Word(f) if f == "type" => Some(DeviceField::Type),
                    Tok::Word(f) if f == "os" => Some(DeviceField::Os),
                    Tok::Word(f) if f == "browser" => Some(DeviceField::Browser),
                    _ => None,
                };
                let field = field.ok_or_else(|| self.err("a device field (type, os, browser)"))?;
                self.bump();
                Ok(Rule::Device {
                    field,
                    cmp: self.comparison()?,
                })
            }
            "in" => {
                self.bump();
                self.expect_word("audience")?;
                let offset = self.tok().start;
                let name = self.path("an audience name")?;
                self.refs.push(Reference {
                    kind: RefKind::Audience,
                    name: name.clone(),
                    offset,
                });
                Ok(Rule::InAudience { name })
            }
            "consented" => {
                self.bump();
                self.expect_word("to")?;
                let purpose = self.path("a consent purpose")?;
                Ok(Rule::Consented { purpose })
            }
            "performed" => {
                self.bump();
                self.performed()
            }
            "first" | "last" => {
                self.bump();
                let which = if w == "first" {
                    Which::First
                } else {
                    Which::Last
                };
                self.expect_word("performed")?;
                let event = self.selector()?;
                let order = if self.eat_word("before") {
                    Order::Before
                } else if self.eat_word("after") {
                    Order::After
                } else {
                    return Err(self.err("`before` or `after`"));
                };
                let time = self.time_ref()?;
                Ok(Rule::FirstLast {
                    which,
                    event,
                    order,
                    time,
                })
            }
            _ => Err(self.err(CONDITION)),
        }
    }

    fn performed(&mut self) -> Result<Rule, ParseError> {
        let first = self.selector()?;
        if self.eat_word("then") {
            let then = self.selector()?;
            self.expect_word("within")?;
            let within = self.duration()?;
            return Ok(Rule::Then {
                first,
                then,
                within,
            });
        }
        if self.is_word("and") && self.word_at(1, "not") && self.word_at(2, "followed") {
            self.bump();
            self.bump();
            self.bump();
            self.expect_word("by")?;
            let then = self.selector()?;
            self.expect_word("within")?;
            let within = self.duration()?;
            return Ok(Rule::NotFollowed {
                first,
                then,
                within,
            });
        }
        let count = if self.is_word("at") {
            self.bump();
            let op: fn(u32) -> CountOp = if self.eat_word("least") {
                CountOp::AtLeast
            } else if self.eat_word("most") {
                CountOp::AtMost
            } else {
                return Err(self.err("`least` or `most`"));
            };
            op(self.times()?)
        } else if self.eat_word("exactly") {
            CountOp::Exactly(self.times()?)
        } else {
            CountOp::AtLeast(1)
        };
        let within = if self.eat_word("within") {
            Some(self.duration()?)
        } else {
            None
        };
        Ok(Rule::Performed {
            event: first,
            count,
            within,
        })
    }

    fn times(&mut self) -> Result<u32, ParseError> {
        let n = match self.peek() {
            Tok::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX) => {
                *n as u32
            }
            _ => return Err(self.err("a whole number of times, e.g. `3`")),
        };
        self.bump();
        if !self.eat_word("times") && !self.eat_word("time") {
            return Err(self.err("`times`"));
        }
        Ok(n)
    }
}
