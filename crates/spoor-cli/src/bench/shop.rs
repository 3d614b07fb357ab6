//! A deterministic generator of realistic e-commerce traffic: visitors arriving through
//! UTM-tagged campaigns, browsing categories and products, carts, orders, and logins that
//! identify them. Events are ~300–800 bytes, like real analytics.js/server traffic.

use serde_json::{json, Value};

/// A small, fast, seedable PRNG (xorshift64*), so runs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const CATEGORIES: &[&str] = &[
    "shoes",
    "jackets",
    "bags",
    "watches",
    "sunglasses",
    "shirts",
    "dresses",
    "sportswear",
];
const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("google", "cpc", "winter-sale"),
    ("newsletter", "email", "weekly-picks"),
    ("facebook", "paid-social", "retarget-cart"),
    ("instagram", "social", "influencer-q4"),
    ("bing", "cpc", "brand"),
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
];

/// Generates events for `people` persons; event `i` belongs to a pseudo-random person.
pub struct Shop {
    rng: Rng,
    people: u64,
    seq: u64,
    run: u64,
}

impl Shop {
    pub fn new(seed: u64, people: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            people: people.max(1),
            seq: 0,
            run: seed,
        }
    }

    /// The next event as a Segment message.
    pub fn next_event(&mut self, now_ms: i64) -> Value {
        self.seq += 1;
        let person = self.rng.below(self.people);
        let anon = format!("anon-{:016x}", person.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let user = format!("user-{person}");
        let cat = *self.rng.pick(CATEGORIES);
        let product = self.rng.below(5000);
        let (src, med, camp) = *self.rng.pick(CAMPAIGNS);
        let ua = *self.rng.pick(AGENTS);
        let ts = chrono::DateTime::from_timestamp_millis(now_ms - self.rng.below(5000) as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let context = json!({
            "library": {"name": "analytics.js", "version": "next-1.84.3"},
            "userAgent": ua,
            "locale": "nl-NL",
            "page": {"path": format!("/{cat}/p{product}"), "url": format!("https://shop.example/{cat}/p{product}?utm_source={src}&utm_medium={med}&utm_campaign={camp}"), "referrer": "https://www.google.com/"},
            "campaign": {"source": src, "medium": med, "name": camp}
        });
        let message_id = format!("bench-{}-{}", self.run, self.seq);
        let price = 10 + self.rng.below(190);
        match self.rng.below(100) {
            0..=44 => {
                json!({"type": "page", "anonymousId": anon, "name": cat, "properties": {"category": cat, "path": format!("/{cat}")}, "context": context, "messageId": message_id, "timestamp": ts})
            }
            45..=74 => {
                json!({"type": "track", "event": "Product Viewed", "anonymousId": anon, "properties": {"product_id": format!("p{product}"), "category": cat, "price": price, "currency": "EUR"}, "context": context, "messageId": message_id, "timestamp": ts})
            }
            75..=86 => {
                json!({"type": "track", "event": "Product Added", "anonymousId": anon, "properties": {"product_id": format!("p{product}"), "category": cat, "price": price, "quantity": 1, "cart_id": format!("c{person}")}, "context": context, "messageId": message_id, "timestamp": ts})
            }
            87..=93 => {
                json!({"type": "identify", "userId": user, "anonymousId": anon, "traits": {"email": format!("{user}@example.com"), "first_name": "Sam", "plan": "member", "city": "Utrecht"}, "context": context, "messageId": message_id, "timestamp": ts})
            }
            _ => {
                json!({"type": "track", "event": "Order Completed", "userId": user, "anonymousId": anon, "properties": {"order_id": format!("o{}", self.seq), "revenue": price, "currency": "EUR", "products": [{"product_id": format!("p{product}"), "price": price, "quantity": 1, "category": cat}]}, "context": context, "messageId": message_id, "timestamp": ts})
            }
        }
    }

    /// A `/v1/batch` body of `n` events with the batch's `sentAt`.
    pub fn batch_body(&mut self, n: usize, now_ms: i64) -> Vec<u8> {
        let events: Vec<Value> = (0..n).map(|_| self.next_event(now_ms)).collect();
        let sent = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .to_rfc3339();
        serde_json::to_vec(&json!({"batch": events, "sentAt": sent})).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_realistic_sized_and_deterministic() {
        let mut a = Shop::new(7, 1000);
        let mut b = Shop::new(7, 1000);
        let mut total = 0;
        for _ in 0..1000 {
            let e = a.next_event(1_700_000_000_000);
            assert_eq!(e, b.next_event(1_700_000_000_000));
            let n = e.to_string().len();
            assert!((300..=900).contains(&n), "{n}: {e}");
            total += n;
        }
        let avg = total / 1000;
        assert!((400..=800).contains(&avg), "{avg}");
    }
}
