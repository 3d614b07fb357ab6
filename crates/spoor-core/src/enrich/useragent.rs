//! User-agent parsing, delegated to `woothee` (a maintained, table-driven parser with no
//! regex start-up cost), mapped to Spoor's small device vocabulary.

use crate::event::UserAgentInfo;

fn known(s: &str) -> Option<String> {
    (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then(|| s.to_owned())
}

/// Parses a user-agent string. Returns `None` for an empty string.
pub fn parse_user_agent(ua: &str) -> Option<UserAgentInfo> {
    if ua.trim().is_empty() {
        return None;
    }
    let parser = woothee::parser::Parser::new();
    let Some(r) = parser.parse(ua) else {
        return Some(UserAgentInfo {
            device_type: "other".into(),
            ..Default::default()
        });
    };
    let device_type = match r.category {
        "pc" => "desktop",
        "smartphone" | "mobilephone" => "mobile",
        "crawler" => "bot",
        _ => "other",
    };
    // woothee files iPads and Android tablets under "smartphone"; the UA says otherwise.
    let lower = ua.to_ascii_lowercase();
    let device_type = if device_type == "mobile"
        && (lower.contains("ipad") || (lower.contains("android") && !lower.contains("mobile")))
    {
        "tablet"
    } else {
        device_type
    };
    Some(UserAgentInfo {
        browser: known(r.name),
        browser_version: known(r.version),
        os: known(r.os),
        os_version: known(&r.os_version),
        device_type: device_type.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desktop_chrome() {
        let ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let info = parse_user_agent(ua).unwrap();
        assert_eq!(info.browser.as_deref(), Some("Chrome"));
        assert_eq!(info.browser_version.as_deref(), Some("120.0.0.0"));
        assert_eq!(info.os.as_deref(), Some("Mac OSX"));
        assert_eq!(info.device_type, "desktop");
    }

    #[test]
    fn iphone_is_mobile_and_ipad_is_tablet() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
        assert_eq!(parse_user_agent(iphone).unwrap().device_type, "mobile");
        let ipad = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
        assert_eq!(parse_user_agent(ipad).unwrap().device_type, "tablet");
    }

    #[test]
    fn crawler_is_bot_and_garbage_is_other() {
        let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(parse_user_agent(bot).unwrap().device_type, "bot");
        assert_eq!(
            parse_user_agent("curl-ish thing").unwrap().device_type,
            "other"
        );
        assert_eq!(parse_user_agent("  "), None);
    }
}
