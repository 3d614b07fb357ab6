//! Errors of the audience language: where in the text, and what was expected there.

use std::fmt;

/// A rule that does not parse, or that refers to something unknown.
///
/// `offset` is a byte offset into the text; `line` and `column` are 1-based (the column
/// counts characters), so an editor can point at the spot. For a rule given as JSON, which has
/// no positions, reference errors carry the position in the rule's canonical text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    /// What would have been accepted here, e.g. "a comparison (=, !=, …)".
    pub expected: String,
    /// What was there instead, e.g. "`foo`" or "the end of the rule".
    pub found: String,
}

impl ParseError {
    pub(crate) fn at(src: &str, offset: usize, expected: &str, found: &str) -> ParseError {
        let offset = offset.min(src.len());
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        let column = before[line_start..].chars().count() + 1;
        ParseError {
            offset,
            line,
            column,
            expected: expected.to_owned(),
            found: found.to_owned(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {}): expected {}, found {}",
            self.line, self.column, self.offset, self.expected, self.found
        )
    }
}

impl std::error::Error for ParseError {}

/// A JSON rule that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not a rule: the JSON does not match the schema.
    #[error("invalid rule JSON: {0}")]
    Json(String),
    /// Well-formed JSON that the text language could not express (an empty `and`, a
    /// duration out of range…), or a reference to something unknown.
    #[error("{0}")]
    Invalid(ParseError),
}

/// A set of audience definitions that cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// `a → b → … → a`: each audience refers to the next.
    #[error("audiences refer to each other in a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
    /// The first name refers to the second, which is not defined.
    #[error("audience \"{0}\" refers to unknown audience \"{1}\"")]
    Unknown(String, String),
}
