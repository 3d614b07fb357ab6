//! `spoor demo`: a fresh data directory filled with a living shop, served with the UI.
//!
//! It starts the real server, then acts as a client: defines computed traits and audiences
//! through the admin API and sends a month of shop traffic through the Segment batch API
//! (visitors arriving through UTM-tagged campaigns, browsing categories, carts, orders,
//! logins on a second device, e-mail clicks), then keeps sending a visit every second or
//! so, so the debugger and the overview move. Nothing is special-cased in the server.

use crate::bench::shop::Rng;
use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use spoor_server::config::{Config, Overrides};
use spoor_server::{AppState, InitSecrets};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// A fresh (absent or empty) directory for the demo's data.
    #[arg(long, default_value = "./spoor-demo")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// People in the shop's history.
    #[arg(long, default_value_t = 1500)]
    pub people: u64,
    /// Do not keep sending live visits after the history.
    #[arg(long)]
    pub no_live: bool,
}

const CATEGORIES: &[&str] = &[
    "shoes",
    "jackets",
    "bags",
    "watches",
    "sunglasses",
    "shirts",
];
const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("google", "cpc", "winter-sale"),
    ("newsletter", "email", "weekly-picks"),
    ("facebook", "paid-social", "retarget-cart"),
    ("instagram", "social", "influencer-q4"),
    ("bing", "cpc", "brand"),
];
const NAMES: &[&str] = &[
    "Ann", "Bram", "Chloé", "Daan", "Eva", "Finn", "Gijs", "Hanna", "Iris", "Jens", "Lotte",
    "Milan", "Noor", "Sem", "Tess", "Vera",
];
const CITIES: &[&str] = &[
    "Amsterdam",
    "Utrecht",
    "Rotterdam",
    "Eindhoven",
    "Groningen",
    "Antwerpen",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
];

/// The traits and audiences a marketer would start with.
pub fn definitions() -> (Vec<Value>, Vec<Value>) {
    let traits = vec![
        json!({"name": "orders", "aggregation": "count", "event": {"kind": "track", "name": "Order Completed"}, "description": "orders, all time"}),
        json!({"name": "revenue", "aggregation": "sum", "property": "revenue", "event": {"kind": "track", "name": "Order Completed"}, "description": "revenue, all time (EUR)"}),
        json!({"name": "favourite_category", "aggregation": {"most_frequent": {"top": 1}}, "property": "category", "event": {"kind": "track", "name": "Product Viewed"}, "window": "30d", "description": "most viewed category, 30 days"}),
    ];
    let audiences = vec![
        json!({"name": "shoe-lovers", "description": "viewed shoes twice or more in 30 days", "rule": "performed \"Product Viewed\" where category = \"shoes\" at least 2 times within 30d"}),
        json!({"name": "cart-abandoners", "description": "added to cart, no order within 2 hours", "rule": "performed \"Product Added\" and not followed by \"Order Completed\" within 2h"}),
        json!({"name": "repeat-buyers", "description": "two orders or more", "rule": "computed orders >= 2"}),
        json!({"name": "newsletter-readers", "description": "came in through an e-mail", "rule": "utm medium = \"email\""}),
    ];
    (traits, audiences)
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One person's visits: a month of sessions, each a few page views and product views,
/// sometimes a cart, an order after logging in, a second device, an e-mail click.
pub struct Visitor<'a> {
    pub rng: &'a mut Rng,
    pub person: u64,
}

impl Visitor<'_> {
    fn ctx(&mut self, camp: (&str, &str, &str), path: &str, ua: &str) -> Value {
        let (src, med, name) = camp;
        json!({
            "library": {"name": "analytics.js", "version": "next-1.84.3"},
            "userAgent": ua, "locale": "nl-NL",
            "page": {"path": path, "url": format!("https://shop.example{path}?utm_source={src}&utm_medium={med}&utm_campaign={name}")},
            "campaign": {"source": src, "medium": med, "name": name}
        })
    }

    /// A session starting at `start_ms`; appends its events to `out`.
    pub fn session(&mut self, start_ms: i64, out: &mut Vec<Value>) {
        let p = self.person;
        let second_device = self.rng.below(6) == 0;
        let anon = if second_device {
            format!("anon2-{p:08x}")
        } else {
            format!("anon-{p:08x}")
        };
        let user = format!("u{p}");
        let email = format!(
            "{}.{p}@example.com",
            NAMES[(p % NAMES.len() as u64) as usize]
                .to_lowercase()
                .replace('é', "e")
        );
        let camp = *self.rng.pick(CAMPAIGNS);
        let ua = if second_device {
            AGENTS[1]
        } else {
            *self.rng.pick(AGENTS)
        };
        let fav = CATEGORIES[(p % CATEGORIES.len() as u64) as usize];
        let mut t = start_ms;
        let push = |out: &mut Vec<Value>, mut e: Value, t: i64| {
            e["timestamp"] = json!(iso(t));
            e["anonymousId"] = json!(anon);
            out.push(e);
        };
        if camp.1 == "email" && self.rng.below(2) == 0 {
            let ctx = self.ctx(camp, "/", ua);
            push(
                out,
                json!({"type": "track", "event": "Email Clicked", "userId": user, "properties": {"campaign": camp.2, "link": "hero"}, "context": ctx}),
                t,
            );
        }
        let pages = 1 + self.rng.below(4);
        let mut cart = Vec::new();
        for _ in 0..pages {
            let cat = if self.rng.below(3) == 0 {
                *self.rng.pick(CATEGORIES)
            } else {
                fav
            };
            let product = format!("p{}", self.rng.below(400));
            let price = 15 + self.rng.below(185);
            let ctx = self.ctx(camp, &format!("/{cat}"), ua);
            push(
                out,
                json!({"type": "page", "name": cat, "properties": {"category": cat, "path": format!("/{cat}")}, "context": ctx}),
                t,
            );
            t += 20_000 + self.rng.below(60_000) as i64;
            let ctx = self.ctx(camp, &format!("/{cat}/{product}"), ua);
            push(
                out,
                json!({"type": "track", "event": "Product Viewed", "properties": {"product_id": product, "category": cat, "price": price, "currency": "EUR"}, "context": ctx}),
                t,
            );
            t += 30_000 + self.rng.below(90_000) as i64;
            if self.rng.below(4) == 0 {
                let ctx = self.ctx(camp, &format!("/{cat}/{product}"), ua);
                push(
                    out,
                    json!({"type": "track", "event": "Product Added", "properties": {"product_id": product, "category": cat, "price": price, "quantity": 1}, "context": ctx}),
                    t,
                );
                cart.push((product, cat, price));
                t += 10_000;
            }
        }
        let known = !p.is_multiple_of(3);
        if known && (!cart.is_empty() || second_device) && self.rng.below(3) != 0 {
            let ctx = self.ctx(camp, "/login", ua);
            let first = NAMES[(p % NAMES.len() as u64) as usize];
            push(
                out,
                json!({"type": "identify", "userId": user, "traits": {"email": email, "first_name": first, "city": CITIES[(p % CITIES.len() as u64) as usize], "plan": if p.is_multiple_of(5) { "vip" } else { "member" }}, "context": ctx}),
                t,
            );
            t += 15_000;
            if !cart.is_empty() && self.rng.below(2) == 0 {
                let revenue: u64 = cart.iter().map(|c| c.2).sum();
                let products: Vec<Value> = cart
                    .iter()
                    .map(|(id, cat, price)| json!({"product_id": id, "category": cat, "price": price, "quantity": 1}))
                    .collect();
                let ctx = self.ctx(camp, "/checkout", ua);
                push(
                    out,
                    json!({"type": "track", "event": "Order Completed", "userId": user, "properties": {"order_id": format!("o{p}-{t}"), "revenue": revenue, "currency": "EUR", "products": products}, "context": ctx}),
                    t,
                );
            }
        }
    }
}

/// The shop's history: every person's sessions over the 30 days before `now_ms`, in time
/// order.
pub fn history(people: u64, now_ms: i64, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for person in 0..people {
        let sessions = 1 + rng.below(4);
        for _ in 0..sessions {
            let start = now_ms - 60_000 - rng.below(30 * 86_400_000) as i64;
            Visitor {
                rng: &mut rng,
                person,
            }
            .session(start, &mut out);
        }
    }
    out.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    out
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    auth: (&str, bool),
    body: &Value,
) -> anyhow::Result<()> {
    let req = http.post(url).json(body);
    let req = if auth.1 {
        req.bearer_auth(auth.0)
    } else {
        req.basic_auth(auth.0, Some(""))
    };
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "POST {url}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn fill(
    base: String,
    key: String,
    token: String,
    people: u64,
    live: bool,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let (traits, audiences) = definitions();
    for t in &traits {
        post(
            &http,
            &format!("{base}/v1/computed-traits"),
            (&token, true),
            t,
        )
        .await?;
    }
    for a in &audiences {
        post(&http, &format!("{base}/v1/audiences"), (&token, true), a).await?;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let events = history(people, now, 7);
    let total = events.len();
    for chunk in events.chunks(500) {
        let body = json!({"batch": chunk, "sentAt": iso(chrono::Utc::now().timestamp_millis())});
        post(&http, &format!("{base}/v1/batch"), (&key, false), &body).await?;
    }
    println!("demo: sent {total} events of {people} people; the UI is ready");
    if !live {
        return Ok(());
    }
    let mut rng = Rng::new(now as u64);
    loop {
        tokio::time::sleep(Duration::from_millis(800 + rng.below(1500))).await;
        let person = people + rng.below(people.max(1) * 2);
        let mut out = Vec::new();
        Visitor {
            rng: &mut rng,
            person,
        }
        .session(chrono::Utc::now().timestamp_millis(), &mut out);
        // A live visit arrives as it happens: only its first events, now.
        out.truncate(3);
        let now = chrono::Utc::now().timestamp_millis();
        for e in &mut out {
            e["timestamp"] = json!(iso(now));
        }
        let body = json!({"batch": out, "sentAt": iso(now)});
        if let Err(e) = post(&http, &format!("{base}/v1/batch"), (&key, false), &body).await {
            tracing::warn!(error = %e, "demo: live visit not sent");
        }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args
        .data_dir
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        bail!(
            "{} is not empty; the demo fills a fresh directory (serve this one again with `spoor serve --data-dir {}`)",
            args.data_dir.display(),
            args.data_dir.display()
        );
    }
    let cfg = Config::load(
        None,
        &Overrides {
            listen: Some(args.listen.clone()),
            data_dir: Some(args.data_dir.clone()),
        },
    )?;
    super::serve::init_tracing(&cfg.log.level, cfg.log.format);
    let secret = |p: &str| format!("{p}{}", uuid_like());
    let key = secret("wk_demo_");
    let token = secret("spt_demo_");
    let password = std::env::var("SPOOR_INIT_ADMIN_PASSWORD")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| secret("").chars().take(16).collect());
    let init = InitSecrets {
        write_key: Some(key.clone()),
        admin_token: Some(token.clone()),
        admin_password: Some(password.clone()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (app, _) = AppState::open(cfg, Arc::new(spoor_core::SystemClock), init)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e:?}", args.data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        println!(
            "Spoor demo on {base}/ui/  (data in {})",
            args.data_dir.display()
        );
        println!("  log in as:    admin / {password}");
        println!("  write key:    {key}");
        println!("  admin token:  {token}");
        println!("filling the shop with {} people…", args.people);
        let filler = tokio::spawn(fill(base, key, token, args.people, !args.no_live));
        let mut served = tokio::spawn(spoor_server::serve(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        }));
        tokio::select! {
            r = filler => {
                r??;
                // Without live visits, keep serving until Ctrl-C.
                (&mut served).await??;
            }
            r = &mut served => { r??; }
        }
        Ok(())
    })
}

fn uuid_like() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}
