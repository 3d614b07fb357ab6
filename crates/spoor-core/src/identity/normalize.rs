//! Value normalisation, so that the same real-world identifier written differently is one key.
//!
//! The phone normaliser is deliberately small instead of pulling in `phonenumber`: that crate
//! (and its ~70 dependencies) took 31 s to build on the 2-core reference machine, over the
//! 30 s budget. This one covers what CRM and form data actually contain — `+CC…`, `00CC…`,
//! national numbers with one trunk `0` (or NANP 10/11-digit) given a default country code,
//! separators, `tel:` and extensions — and refuses the rest rather than guessing.
//! It does not validate number plans: `+31 6 1234 5678` and `+316 12345678` are the same key,
//! which is what identity needs; whether a number exists is not its question.

use serde::{Deserialize, Serialize};

/// How values of a type are normalised before they become graph keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalize {
    /// Trimmed and lowercased; must look like `local@domain`. Provider tricks (Gmail dots,
    /// `+tags`) are *not* removed: they are not universal and would merge distinct people.
    Email,
    /// To E.164 (`+` and 7–15 digits) where the country is known; without a country code and
    /// without a default, the bare digits (which match only the same national spelling).
    Phone {
        #[serde(default)]
        default_country_code: Option<u16>,
    },
    /// Trimmed and lowercased (case-insensitive custom ids).
    Lowercase,
    /// Trimmed only. The default: ids such as `user_id` are case-sensitive.
    #[default]
    #[serde(alias = "none")]
    Exact,
}

impl Normalize {
    /// The normalised value, or why it cannot be one.
    pub fn apply(&self, raw: &str) -> Result<String, String> {
        let v = raw.trim();
        match self {
            Self::Exact => Ok(v.to_owned()),
            Self::Lowercase => Ok(v.to_lowercase()),
            Self::Email => email(v),
            Self::Phone {
                default_country_code,
            } => phone(v, *default_country_code),
        }
    }
}

fn email(v: &str) -> Result<String, String> {
    let v = v.strip_prefix("mailto:").unwrap_or(v).to_lowercase();
    match v.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !v.chars().any(char::is_whitespace) =>
        {
            Ok(v)
        }
        _ => Err("not an e-mail address".to_owned()),
    }
}

/// See the module doc for what is covered.
fn phone(v: &str, default_cc: Option<u16>) -> Result<String, String> {
    let v = v.strip_prefix("tel:").unwrap_or(v);
    // Cut an extension: "x12", "ext. 12", "#12", ";ext=12".
    let lower = v.to_ascii_lowercase();
    let cut = ["ext", ";", "#", "x"]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(v.len());
    let v = v[..cut].trim();
    let mut digits = String::with_capacity(v.len());
    let mut plus = false;
    for (i, c) in v.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            _ => return Err("not a phone number".to_owned()),
        }
    }
    let (prefix, body) = if plus {
        ("+", digits)
    } else if let Some(rest) = digits.strip_prefix("00") {
        ("+", rest.to_owned())
    } else if let Some(cc) = default_cc {
        ("+", national_to_international(&digits, cc))
    } else {
        ("", digits)
    };
    if !(7..=15).contains(&body.len()) || body.starts_with('0') && !prefix.is_empty() {
        return Err("not a phone number (length)".to_owned());
    }
    Ok(format!("{prefix}{body}"))
}

fn national_to_international(digits: &str, cc: u16) -> String {
    match cc {
        // NANP: no trunk 0; a leading 1 on 11 digits is the country code itself.
        1 if digits.len() == 11 && digits.starts_with('1') => digits.to_owned(),
        1 => format!("1{digits}"),
        // Italy keeps its leading 0 in international form.
        39 => format!("39{digits}"),
        _ => format!("{cc}{}", digits.strip_prefix('0').unwrap_or(digits)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph(v: &str, cc: Option<u16>) -> Result<String, String> {
        Normalize::Phone {
            default_country_code: cc,
        }
        .apply(v)
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let n = Normalize::Email;
        assert_eq!(
            n.apply("  Jan@Example.COM ").as_deref(),
            Ok("jan@example.com")
        );
        assert_eq!(n.apply("mailto:a.b+x@ex.nl").as_deref(), Ok("a.b+x@ex.nl"));
        assert!(n.apply("jan").is_err());
        assert!(n.apply("@example.com").is_err());
        assert!(n.apply("jan@localhost").is_err());
        assert!(n.apply("jan doe@ex.com").is_err());
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(ph("+31 6 1234 5678", None).as_deref(), Ok("+31612345678"));
        assert_eq!(ph("0031-6-12345678", None).as_deref(), Ok("+31612345678"));
        assert_eq!(ph("06 12345678", Some(31)).as_deref(), Ok("+31612345678"));
        assert_eq!(ph("(415) 555-2671", Some(1)).as_deref(), Ok("+14155552671"));
        assert_eq!(ph("1 415 555 2671", Some(1)).as_deref(), Ok("+14155552671"));
        assert_eq!(ph("06 1234 5678", Some(39)).as_deref(), Ok("+390612345678"));
        assert_eq!(
            ph("tel:+31612345678;ext=12", None).as_deref(),
            Ok("+31612345678")
        );
        assert_eq!(
            ph("+31 6 12345678 x 99", None).as_deref(),
            Ok("+31612345678")
        );
    }

    #[test]
    fn phones_without_country_keep_digits_and_garbage_is_refused() {
        assert_eq!(ph("06-12345678", None).as_deref(), Ok("0612345678"));
        assert!(ph("112", Some(31)).is_err());
        assert!(ph("call me", None).is_err());
        assert!(ph("+0612345678", None).is_err());
        assert!(ph("1-800-FLOWERS", Some(1)).is_err());
    }

    #[test]
    fn exact_and_lowercase_trim() {
        assert_eq!(Normalize::Exact.apply(" AbC ").as_deref(), Ok("AbC"));
        assert_eq!(Normalize::Lowercase.apply(" AbC ").as_deref(), Ok("abc"));
    }
}
