//! UTM extraction. Analytics libraries send `context.campaign` when they parsed the landing
//! URL themselves; server-side and older clients only send the URL, so Spoor parses
//! `utm_*` from `context.page.url` or `context.page.search` as a fallback.

use crate::event::Utm;

/// Builds UTM from `context.campaign` fields (`name` is the campaign, as in the Segment spec).
pub fn utm_from_campaign(
    source: Option<&str>,
    medium: Option<&str>,
    name: Option<&str>,
    content: Option<&str>,
    term: Option<&str>,
) -> Utm {
    let own = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Utm {
        source: own(source),
        medium: own(medium),
        campaign: own(name),
        content: own(content),
        term: own(term),
    }
}

/// Parses `utm_*` query parameters from a full URL or a bare query string (`?a=b` or `a=b`).
pub fn utm_from_url(url_or_search: &str) -> Utm {
    let query = match url_or_search.find('?') {
        Some(i) => &url_or_search[i + 1..],
        None if url_or_search.contains("://") => "",
        None => url_or_search,
    };
    let query = query.split('#').next().unwrap_or_default();
    let mut utm = Utm::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let slot = match k.as_ref() {
            "utm_source" => &mut utm.source,
            "utm_medium" => &mut utm.medium,
            "utm_campaign" => &mut utm.campaign,
            "utm_content" => &mut utm.content,
            "utm_term" => &mut utm.term,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.to_owned());
        }
    }
    utm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_and_bare_search() {
        let u = utm_from_url("https://shop.test/p?utm_source=google&utm_medium=cpc&utm_campaign=spring%20sale&x=1#top");
        assert_eq!(u.source.as_deref(), Some("google"));
        assert_eq!(u.medium.as_deref(), Some("cpc"));
        assert_eq!(u.campaign.as_deref(), Some("spring sale"));
        assert_eq!(u.content, None);
        let s = utm_from_url("?utm_term=shoes&utm_content=banner");
        assert_eq!(s.term.as_deref(), Some("shoes"));
        assert_eq!(s.content.as_deref(), Some("banner"));
        assert!(utm_from_url("https://shop.test/").is_empty());
        assert!(utm_from_url("").is_empty());
    }

    #[test]
    fn campaign_blanks_are_absent() {
        let u = utm_from_campaign(Some("news"), Some(" "), Some("spring"), None, None);
        assert_eq!(u.source.as_deref(), Some("news"));
        assert_eq!(u.medium, None);
        assert_eq!(u.campaign.as_deref(), Some("spring"));
    }
}
