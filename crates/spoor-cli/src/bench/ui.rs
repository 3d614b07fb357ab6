//! `spoor bench ui`: how fast the web UI's pages render with many profiles.
//!
//! A live server in this process with the demo's computed traits and audiences, `--people`
//! profiles (each an identify with e-mail and traits and two product views from the same
//! browser) plus 100 demo shoppers with full histories (sessions, carts, orders, second
//! devices, merges). Then, over HTTP with a logged-in session as a browser would: the
//! profile card of demo shoppers, the audience preview of a trait rule and of an event rule,
//! and the overview, audience list and debugger. Prints p50/p95/max per page.

use crate::commands::demo::{definitions, Visitor};
use anyhow::{ensure, Context};
use clap::Args;
use serde_json::{json, Value};
use spoor_core::ids::SourceId;
use spoor_server::ui::users::Role;
use spoor_server::AppState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct UiBenchArgs {
    /// Profiles in the store (besides 100 demo shoppers).
    #[arg(long, default_value_t = 1_000_000)]
    pub people: u64,
    /// Requests per page measured.
    #[arg(long, default_value_t = 30)]
    pub requests: usize,
}

const TOKEN: &str = "bench-ui-admin-token-0123456789";
const SHOPPERS: u64 = 100;

pub fn run(args: UiBenchArgs) -> anyhow::Result<()> {
    let (_tmp, app) = super::open_app(TOKEN)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = super::Served::start(&rt, &app)?;
    let url = served.url.clone();
    let http = reqwest::Client::new();
    let (traits, audiences) = definitions();
    rt.block_on(async {
        for (path, defs) in [("computed-traits", &traits), ("audiences", &audiences)] {
            for d in defs {
                let r = http
                    .post(format!("{url}/v1/{path}"))
                    .bearer_auth(TOKEN)
                    .json(d)
                    .send()
                    .await?;
                ensure!(r.status().is_success(), "{path}: {}", r.status());
            }
        }
        anyhow::Ok(())
    })?;
    println!(
        "spoor bench ui: {} profiles + {SHOPPERS} demo shoppers, the demo's {} computed traits and {} audiences; pages over HTTP on loopback",
        args.people,
        traits.len(),
        audiences.len()
    );

    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    let mut rng = crate::bench::shop::Rng::new(11);
    let mut shoppers = Vec::new();
    for person in 0..SHOPPERS {
        for s in 0..3 {
            let start = now - 86_400_000 * (3 - s) - rng.below(3_600_000) as i64;
            Visitor {
                rng: &mut rng,
                person,
            }
            .session(start, &mut shoppers);
        }
    }
    append(&app, &shoppers)?;
    let mut batch = Vec::with_capacity(1500);
    for i in 0..args.people {
        let p = SHOPPERS + i;
        let anon = format!("bench-anon-{p}");
        let cat = ["shoes", "bags", "watches"][(p % 3) as usize];
        batch.push(json!({"type": "identify", "userId": format!("bu{p}"), "anonymousId": anon,
            "traits": {"email": format!("person.{p}@example.com"), "plan": if p.is_multiple_of(10) { "vip" } else { "member" }, "city": "Utrecht"}}));
        for _ in 0..2 {
            batch.push(
                json!({"type": "track", "event": "Product Viewed", "anonymousId": anon,
                "properties": {"category": cat, "price": 50}}),
            );
        }
        if batch.len() >= 1500 {
            append(&app, &batch)?;
            batch.clear();
        }
        if i > 0 && i % 100_000 == 0 {
            println!(
                "  … {i} people appended ({:.0} s), {} events processed",
                started.elapsed().as_secs_f64(),
                app.processor.status.processed_seq.load(Ordering::Relaxed)
            );
        }
    }
    append(&app, &batch)?;
    let last = app.reader.last_seq();
    while app.processor.status.processed_seq.load(Ordering::Acquire) < last {
        std::thread::sleep(Duration::from_millis(200));
    }
    let processed_in = started.elapsed().as_secs_f64();
    // Right after a bulk load the processor's pending layer holds most profiles until the
    // checkpoint lands: scans in id order merge all of it per page; the preview's sampled
    // point lookups should not care. Measured now, if the checkpoint has not landed yet.
    let pending_before =
        last.saturating_sub(app.processor.status.durable_seq.load(Ordering::Acquire));
    if pending_before > 0 {
        let (session, s) = {
            app.users
                .create("bench-early", Role::Marketer, "bench-password")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            app.users
                .login("bench-early", "bench-password", "127.0.0.1")
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
        };
        let cookie = format!("spoor_session={session}");
        rt.block_on(async {
            let mut ts = Vec::new();
            let mut last_text = String::new();
            for _ in 0..5 {
                let req = preview_req(&http, &url, &cookie, &s.csrf, r#"trait plan = "vip""#);
                let t = Instant::now();
                let body = req.send().await?.text().await?;
                ts.push(t.elapsed());
                last_text = preview_text(&body);
            }
            let still = last.saturating_sub(app.processor.status.durable_seq.load(Ordering::Acquire));
            report(
                &format!("preview before the checkpoint ({pending_before} events pending, {still} after)"),
                ts,
            );
            println!("      → {}", last_text.trim());
            anyhow::Ok(())
        })?;
    }
    // Then the steady state, after the checkpoint.
    let deadline = Instant::now() + Duration::from_secs(600);
    while app.processor.status.durable_seq.load(Ordering::Acquire) < last
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let profiles = app.processor.status.live_profiles.load(Ordering::Relaxed);
    println!(
        "  setup                   {last} events ingested and processed in {processed_in:.0} s, checkpointed after {:.0} s ({profiles} live profiles)",
        started.elapsed().as_secs_f64()
    );

    app.users
        .create("bench", Role::Admin, "bench-password")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (session, s) = app
        .users
        .login("bench", "bench-password", "127.0.0.1")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let cookie = format!("spoor_session={session}");
    let csrf = s.csrf;
    let emails: Vec<String> = (0..SHOPPERS)
        .filter(|p| !p.is_multiple_of(3))
        .filter_map(|p| {
            let r = app.state.reader().ok()?;
            let name = [
                "ann", "bram", "chloe", "daan", "eva", "finn", "gijs", "hanna", "iris", "jens",
                "lotte", "milan", "noor", "sem", "tess", "vera",
            ][(p % 16) as usize];
            let e = format!("{name}.{p}@example.com");
            r.owner("email", &e).ok()??;
            Some(e)
        })
        .collect();
    ensure!(!emails.is_empty(), "no demo shopper logged in");
    rt.block_on(async {
        let get = |path: String| {
            let req = http.get(format!("{url}{path}")).header("cookie", &cookie);
            async move {
                let r = req.send().await?;
                ensure!(r.status() == 200, "{}", r.status());
                let _ = r.bytes().await?;
                anyhow::Ok(())
            }
        };
        let mut cards = Vec::new();
        for i in 0..args.requests {
            let e = &emails[i % emails.len()];
            cards.push(time(get(format!("/ui/profiles/email:{e}"))).await?);
        }
        report("profile card (demo shopper)", cards);
        for (what, rule) in [
            ("audience preview, trait rule", r#"trait plan = "vip""#),
            ("audience preview, event rule", r#"performed "Product Viewed" where category = "shoes" at least 2 times within 30d"#),
        ] {
            let mut ts = Vec::new();
            let mut last = Value::Null;
            for _ in 0..args.requests {
                let req = preview_req(&http, &url, &cookie, &csrf, rule);
                let t = Instant::now();
                let body = req.send().await?.text().await?;
                ts.push(t.elapsed());
                last = json!(preview_text(&body));
            }
            report(what, ts);
            println!("      → {}", last.as_str().unwrap_or("").trim());
            // The exact count of the same rule, as the editor's "Count exactly" runs it.
            let t = Instant::now();
            let body = http
                .post(format!("{url}/ui/audiences/count"))
                .header("cookie", &cookie)
                .header("x-csrf-token", &csrf)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("rule={}", url_encode(rule)))
                .send()
                .await?
                .text()
                .await?;
            let job = body
                .split("hx-get=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .with_context(|| format!("no count job in {body}"))?
                .to_owned();
            let exact = loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let frag = http
                    .get(format!("{url}{job}"))
                    .header("cookie", &cookie)
                    .send()
                    .await?
                    .text()
                    .await?;
                if let Some(i) = frag.find("id=\"count-size\">") {
                    break frag[i + 16..].split('<').next().unwrap_or("").to_owned();
                }
                ensure!(!frag.contains("count error"), "the count failed: {frag}");
            };
            println!(
                "      count exactly (background job): {exact} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        for (what, path) in [
            ("overview", "/ui/"),
            ("audience list (sizes)", "/ui/audiences"),
            ("debugger (newest 50)", "/ui/debugger"),
            ("profile search by e-mail prefix", "/ui/profiles?q=person.12"),
        ] {
            let mut ts = Vec::new();
            for _ in 0..args.requests.min(10) {
                ts.push(time(get(path.to_owned())).await?);
            }
            report(what, ts);
        }
        anyhow::Ok(())
    })?;
    served.stop(&rt);
    app.processor.stop();
    Ok(())
}

fn preview_req(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    csrf: &str,
    rule: &str,
) -> reqwest::RequestBuilder {
    http.post(format!("{url}/ui/audiences/preview"))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("rule={}&seed=7", url_encode(rule)))
}

/// The preview's headline ("≈ 1234 ± 56 (95%) of 1000100 profiles match (…)") without its
/// tags.
fn preview_text(body: &str) -> String {
    let Some(start) = body.find("<p class=\"preview-size\">") else {
        return body.chars().take(200).collect();
    };
    let p = &body[start..];
    let p = &p[..p.find("</p>").unwrap_or(p.len())];
    let mut out = String::new();
    let mut in_tag = false;
    for c in p.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn time(
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f.await?;
    Ok(t.elapsed())
}

fn report(what: &str, mut ts: Vec<Duration>) {
    ts.sort();
    let at = |p: f64| ts[((ts.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "  {what:<34} p50 {:>7.1} ms  p95 {:>7.1} ms  max {:>7.1} ms  ({} requests)",
        at(0.5),
        at(0.95),
        at(1.0),
        ts.len()
    );
}

/// Appends events straight to the log (as ingest would after parsing), in batches.
fn append(app: &AppState, events: &[Value]) -> anyhow::Result<()> {
    let source = SourceId::parse("src_bench").context("source id")?;
    for chunk in events.chunks(500) {
        let body = serde_json::to_vec(&json!({ "batch": chunk }))?;
        let recs = super::batch_records(&body, &source, chrono::Utc::now())?;
        app.writer.append_blocking(recs)?;
    }
    Ok(())
}
