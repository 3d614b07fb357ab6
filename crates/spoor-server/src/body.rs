//! Reading a request at the door: the body (with `Content-Encoding: gzip`, size-capped
//! *after* inflating so a gzip bomb costs at most the cap), the write key, the client IP.
//!
//! `Content-Type` is deliberately ignored: real clients send JSON labelled `text/plain`
//! (browsers avoiding CORS preflights) or gzip labelled as a form (rudder-sdk-node).

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use base64::Engine;
use bytes::Bytes;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

/// Reads the whole body, inflating gzip, and fails with `TooLarge` past `limit` bytes.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge(format!("request body exceeds {limit} bytes"));
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large()
        } else {
            ApiError::InvalidRequest(format!("could not read the request body: {e}"))
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => inflate(&raw, limit),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "unsupported Content-Encoding {other:?}; use gzip or none"
        ))),
    }
}

/// Whether reading the body failed because it passed the limit (anywhere in the chain).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Inflates gzip, reading at most `limit + 1` bytes so oversize is detected without
/// materialising it.
pub fn inflate(gz: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity((gz.len() * 4).min(limit + 1));
    let mut dec = flate2::read::MultiGzDecoder::new(gz).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| ApiError::InvalidRequest(format!("body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::TooLarge(format!(
            "request body exceeds {limit} bytes after decompression"
        )));
    }
    Ok(out.into())
}

/// The write key from HTTP Basic auth (`key:` or just `key` as the user) or `?writeKey=`.
pub fn write_key_from_request(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let auth = auth.trim();
        if let Some(b64) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let user = text.split(':').next().unwrap_or_default();
            if !user.is_empty() {
                return Some(user.to_owned());
            }
        }
    }
    let query = query?;
    url_query_param(query, "writeKey")
}

fn url_query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// The client's IP: the connection's peer, or — only when the peer is a trusted proxy —
/// the right-most untrusted address in `X-Forwarded-For`.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    match peer_ip {
        Some(ip) if is_trusted(ip) => {
            let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
            let Some(xff) = xff else { return Some(ip) };
            let hops: Vec<IpAddr> = xff
                .split(',')
                .filter_map(|h| h.trim().parse().ok())
                .collect();
            Some(
                hops.into_iter()
                    .rev()
                    .find(|h| !is_trusted(*h))
                    .unwrap_or(ip),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflate_caps_after_decompression() {
        let small = gz(b"{\"a\":1}");
        assert_eq!(&inflate(&small, 100).unwrap()[..], b"{\"a\":1}");
        let bomb = gz(&vec![b' '; 10_000_000]);
        assert!(bomb.len() < 20_000);
        assert!(matches!(
            inflate(&bomb, 500_000),
            Err(ApiError::TooLarge(_))
        ));
        assert!(matches!(
            inflate(b"not gzip", 100),
            Err(ApiError::InvalidRequest(_))
        ));
    }

    #[test]
    fn write_key_from_basic_with_or_without_colon_and_query() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic V1JJVEVLRVkxMjM6"),
        );
        assert_eq!(
            write_key_from_request(&h, None).as_deref(),
            Some("WRITEKEY123")
        );
        let no_colon = base64::engine::general_purpose::STANDARD.encode("KEY2");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {no_colon}")).unwrap(),
        );
        assert_eq!(write_key_from_request(&h, None).as_deref(), Some("KEY2"));
        let empty = HeaderMap::new();
        assert_eq!(
            write_key_from_request(&empty, Some("a=1&writeKey=K%2B3")).as_deref(),
            Some("K+3")
        );
        assert_eq!(write_key_from_request(&empty, Some("a=1")), None);
    }

    #[test]
    fn xff_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("9.9.9.9, 10.0.0.2"),
        );
        let proxy: SocketAddr = "10.0.0.1:5".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(Some(proxy), &h, &trusted),
            Some("9.9.9.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(Some(proxy), &h, &[]),
            Some("10.0.0.1".parse().unwrap())
        );
        let direct: SocketAddr = "8.8.8.8:5".parse().unwrap();
        assert_eq!(
            client_ip(Some(direct), &h, &trusted),
            Some("8.8.8.8".parse().unwrap())
        );
    }
}
