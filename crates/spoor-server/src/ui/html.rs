//! HTML building blocks: escaping, the page layout, small formatters and the SVG chart.
//!
//! Pages are built with `format!` into `String`s: a template engine would be one more
//! dependency and one more language for a handful of pages. Every value that comes from
//! data goes through [`esc`].

use super::users::{Role, User};
use axum::response::Html;
use serde_json::Value;
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn url(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A JSON value as short display text (strings without quotes).
pub fn val(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

/// `2024-05-01T10:00:00.000Z` → `2024-05-01 10:00:00`.
pub fn when(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.len() >= 19 => s[..19].replace('T', " "),
        Some(s) => s.to_owned(),
        None => "—".into(),
    }
}

pub fn when_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "—".into())
}

/// The hidden CSRF field of a form.
pub fn csrf_field(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="_csrf" value="{}">"#,
        esc(token)
    )
}

const NAV: &[(&str, &str, Role)] = &[
    ("/ui/", "Overview", Role::Viewer),
    ("/ui/profiles", "Profiles", Role::Viewer),
    ("/ui/audiences", "Audiences", Role::Viewer),
    ("/ui/sources", "Sources", Role::Viewer),
    ("/ui/destinations", "Destinations", Role::Viewer),
    ("/ui/privacy", "Privacy", Role::Admin),
    ("/ui/users", "Users", Role::Admin),
];

/// The page around `body`: navigation, the user, logout, and htmx's CSRF header.
pub fn layout(user: &User, csrf: &str, title: &str, active: &str, body: &str) -> Html<String> {
    let mut nav = String::new();
    for (href, label, min) in NAV {
        if user.role >= *min {
            let cls = if *href == active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(nav, r#"<a href="{href}"{cls}>{label}</a>"#);
        }
    }
    let headers = serde_json::json!({ "X-CSRF-Token": csrf }).to_string();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Spoor</title><link rel="stylesheet" href="/ui/assets/style.css">
<script src="/ui/assets/htmx.min.js"></script></head>
<body hx-headers='{headers}'>
<header><span class="brand">Spoor</span><nav>{nav}</nav>
<form class="who" method="post" action="/ui/logout">{csrf_field}<span>{name} <em>{role}</em></span> <button type="submit">Log out</button></form></header>
<main><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = esc(title),
        headers = esc(&headers),
        csrf_field = csrf_field(csrf),
        name = esc(&user.name),
        role = user.role.as_str(),
    ))
}

/// A page for someone not logged in (login, errors before a session).
pub fn bare(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} · Spoor</title><link rel="stylesheet" href="/ui/assets/style.css"></head>
<body class="bare"><main><h1>{t}</h1>{body}</main></body></html>"#,
        t = esc(title)
    ))
}

/// A bar chart as inline SVG: one bar per value, labelled by the first and last label.
pub fn bar_chart(values: &[u64], first: &str, last: &str) -> String {
    let (w, h) = (720.0, 160.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(1) as f64;
    let bw = w / n;
    let mut bars = String::new();
    for (i, v) in values.iter().enumerate() {
        let bh = (*v as f64 / max) * (h - 20.0);
        let _ = write!(
            bars,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{v}</title></rect>"#,
            i as f64 * bw + 1.0,
            h - 20.0 - bh,
            (bw - 2.0).max(1.0),
            bh
        );
    }
    format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="events per minute">{bars}
<text x="0" y="{ty}">{first}</text><text x="{w}" y="{ty}" text-anchor="end">{last}</text>
<text x="{w}" y="12" text-anchor="end">max {max}/min</text></svg>"#,
        ty = h - 4.0,
        first = esc(first),
        last = esc(last),
    )
}

/// A two-column table of (label, count) rows.
pub fn count_table(head: &str, rows: &[(String, u64)]) -> String {
    let mut out = format!(
        "<table><tr><th>{}</th><th class=\"num\">events</th></tr>",
        esc(head)
    );
    for (k, v) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{v}</td></tr>",
            esc(k)
        );
    }
    if rows.is_empty() {
        out.push_str("<tr><td colspan=\"2\" class=\"muted\">nothing yet</td></tr>");
    }
    out.push_str("</table>");
    out
}

/// A small icon (a character) per event type.
pub fn icon(kind: &str, name: &str) -> &'static str {
    match (kind, name) {
        ("track", n) if n.contains("Order") || n.contains("Checkout") => "💳",
        ("track", n) if n.contains("Added") || n.contains("Cart") => "🛒",
        ("track", n) if n.contains("Email") || n.contains("E-mail") => "✉️",
        ("track", n) if n.contains("Viewed") => "👁",
        ("track", _) => "⚡",
        ("page", _) | ("screen", _) => "📄",
        ("identify", _) => "🪪",
        ("group", _) => "🏢",
        ("alias", _) => "🔗",
        _ => "•",
    }
}

/// Pretty JSON text for a `<pre>`.
pub fn pretty(v: &Value) -> String {
    esc(&serde_json::to_string_pretty(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url("a b&c/d"), "a+b%26c%2Fd");
    }
}
