//! Tokens of the audience text language, with byte spans for error messages.

use super::ast::Duration;
use super::error::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare word: a keyword or a path (`plan`, `product.category`, `$revenue`).
    Word(String),
    Str(String),
    Number(f64),
    Duration(Duration),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Plus,
    Minus,
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

pub(crate) fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$'
}

pub(crate) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.'
}

/// Splits the text into tokens; the last one is always `Eof`.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < src.len() {
        let c = src[i..].chars().next().unwrap_or(' ');
        let start = i;
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if c == '#' {
            // A comment runs to the end of the line, so rules can explain themselves.
            while i < src.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let simple = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            '+' => Some(Tok::Plus),
            '-' => Some(Tok::Minus),
            _ => None,
        };
        let tok = if let Some(t) = simple {
            i += 1;
            t
        } else if matches!(c, '=' | '!' | '<' | '>') {
            let two = src.get(i..i + 2).unwrap_or("");
            let op = match two {
                "!=" => "!=",
                "<=" => "<=",
                ">=" => ">=",
                _ if c == '=' => "=",
                _ if c == '<' => "<",
                _ if c == '>' => ">",
                _ => {
                    return Err(ParseError::at(src, i, "`!=`", "`!`"));
                }
            };
            i += op.len();
            Tok::Op(op)
        } else if c == '"' {
            i += 1;
            let mut escaped = false;
            loop {
                match bytes.get(i) {
                    None | Some(b'\n') => {
                        return Err(ParseError::at(
                            src,
                            i,
                            "a closing `\"`",
                            "the end of the line",
                        ))
                    }
                    Some(b'\\') if !escaped => escaped = true,
                    Some(b'"') if !escaped => break,
                    Some(_) => escaped = false,
                }
                i += 1;
            }
            i += 1;
            let s: String = serde_json::from_str(&src[start..i]).map_err(|_| {
                ParseError::at(
                    src,
                    start,
                    "a string with valid escapes (\\\" \\\\ \\n \\t \\uXXXX)",
                    &describe(&src[start..i]),
                )
            })?;
            Tok::Str(s)
        } else if c.is_ascii_digit() {
            while i < src.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let num_end = i;
            while i < src.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i > num_end {
                Tok::Duration(Duration::parse(&src[start..i]).ok_or_else(|| {
                    ParseError::at(
                        src,
                        start,
                        "a duration: a whole number and a unit (ms, s, m, h, d, w), e.g. `7d`",
                        &describe(&src[start..i]),
                    )
                })?)
            } else {
                let n: f64 = src[start..i].parse().map_err(|_| {
                    ParseError::at(src, start, "a number", &describe(&src[start..i]))
                })?;
                Tok::Number(n)
            }
        } else if is_word_start(c) {
            while let Some(ch) = src[i..].chars().next().filter(|c| is_word_char(*c)) {
                i += ch.len_utf8();
            }
            Tok::Word(src[start..i].to_owned())
        } else {
            return Err(ParseError::at(
                src,
                i,
                "a word, a string, a number, an operator or a parenthesis",
                &describe(&src[i..i + c.len_utf8()]),
            ));
        };
        out.push(Token { tok, start, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
    });
    Ok(out)
}

/// How a piece of source is named in "found …".
pub(crate) fn describe(text: &str) -> String {
    if text.is_empty() {
        return "the end of the rule".to_owned();
    }
    let short: String = text.chars().take(40).collect();
    format!("`{short}`")
}
