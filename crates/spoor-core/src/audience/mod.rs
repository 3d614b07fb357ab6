//! Audiences: a rule language over a person's traits, channels, devices, groups, other
//! audiences and events, with a brute-force evaluator (the reference, and for previews and
//! backfills) and an incremental one (for real time, with timers for time-driven changes).
//!
//! # Text form
//!
//! A rule is readable by a marketer and diffable by a developer, e.g.
//!
//! ```text
//! performed "Product Viewed" where product.category = "shoes" at least 3 times within 30d
//!   and not performed "Order Completed" within 30d
//!   and not in audience "employees"
//! ```
//!
//! Grammar (keywords are lowercase words; `#` starts a comment to the end of the line):
//!
//! ```text
//! rule      := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" rule ")" | condition
//! condition := "trait" NAME cmp                       # NAME: word or "string"; dotted = nested
//!            | "computed" NAME cmp
//!            | "group" "trait" NAME cmp               # any of the person's groups
//!            | "utm" (source|medium|campaign|content|term) cmp   # any of the person's channels
//!            | "device" (type|os|browser) cmp         # any of the person's devices
//!            | "in" "audience" NAME
//!            | "consented" "to" NAME                 # a consent purpose, see crate::consent
//!            | "performed" event [count] ["within" DURATION]
//!            | "performed" event "then" event "within" DURATION
//!            | "performed" event "and" "not" "followed" "by" event "within" DURATION
//!            | ("first"|"last") "performed" event ("before"|"after") time
//! count     := "at" "least" INT ("times"|"time") | "at" "most" INT … | "exactly" INT …
//! event     := (STRING | kind [STRING] | "any" "event" [STRING]) ["where" where]
//! kind      := track | page | screen | identify | group | alias   # STRING alone = track name
//! where     := PATH cmp | "(" prop ")"           # prop: PATH cmp with and/or/not/( ), no `now`
//! cmp       := ("="|"!="|"<"|"<="|">"|">=") value | "contains" value | "starts" "with" STRING
//!            | "in" "[" [value ("," value)*] "]" | "exists" | "is" "empty"
//! value     := NUMBER | "-" NUMBER | STRING | true | false | time
//! time      := "now" [("+"|"-") DURATION] | "date" STRING     # "2024-01-01" or RFC 3339
//! DURATION  := INT ("ms"|"s"|"m"|"h"|"d"|"w")                 # e.g. 90s, 15m, 2h, 7d, 1w
//! STRING    := a JSON string literal ("…" with \" \\ \n \t \uXXXX escapes)
//! ```
//!
//! `and` binds tighter than `or`; `not` tighter than both. The printer ([`Rule`]'s `Display`)
//! writes the canonical text: single spaces, parentheses only where needed (and around an
//! `and` inside an `and`, so JSON → text → JSON is lossless), `performed X` for "at least 1
//! time", a name bare when it is one word.
//!
//! # JSON form
//!
//! The serde form of [`Rule`] (`{"type": "performed", "event": {"kind": "track", "name":
//! "Order Completed"}, "count": {"at_least": 1}, "within": "7d"}`). [`from_json`] accepts it
//! only when the text form can express it, so the two forms are interchangeable.
//!
//! # Semantics of event conditions
//!
//! Events are ordered by `(timestamp, seq)`. Windows are relative to the evaluation time
//! `now`: an event is *within W* when `ts > now − W` (future timestamps count), so it
//! leaves the window at exactly `ts + W`.
//!
//! - `performed E [at least|at most|exactly N times] [within W]`: the number of events
//!   matching E (within W of now, if given) compares with N; no count means at least 1.
//!   `not performed E within W` is the negation (no such event in the window).
//! - `first|last performed E before|after T`: the earliest / latest matching event's time is
//!   strictly before / after T (`now − 30d` moves with time). False when there is none.
//! - `performed A then B within T` (funnel): some A and some later B (by `(ts, seq)`, so one
//!   event never pairs with itself) with `ts_B − ts_A ≤ T`. Once true, true forever.
//! - `performed A and not followed by B within T` (abandonment): the *latest* A has no B after
//!   it with `ts_B ≤ ts_A + T`, and its deadline has passed (`now > ts_A + T`). The person
//!   enters at `ts_A + T + 1 ms` if no B came; a B in time, or a newer A (which restarts the
//!   clock) takes them out. A B after the deadline does not: the cart *was* abandoned.
//!
//! Non-event conditions read [`ProfileFacts`]; their semantics are on [`Comparison`].
//!
//! # Limits
//!
//! - Memory per (person, audience) is bounded for counts, windows and first/last (see
//!   [`SlotState`]). Exactness with late events has a price for sequences: `A then B` keeps
//!   every A and B until the first completed pair (then a flag), and `A and not followed by
//!   B` keeps the B's after the latest A.
//! - A name containing a dot cannot be addressed as one key (`trait "a.b"` reads `a` → `b`).
//! - Where-clauses cannot use `now` (events are matched once, on arrival); recency is
//!   `within`.
//! - Non-event facts (traits, computed values, memberships…) are inputs: when they change,
//!   the processor re-evaluates the rules that [`Dependencies`] say read them.
//!
//! # Real time
//!
//! [`compile`] a rule once; keep one [`AudienceState`] per (person, audience): `apply` each
//! event the [`Dependencies`] say matters, `merge` on identity merges, `evaluate` after
//! changes, and set a timer at `next_change` — time alone moves people out of "bought in the
//! last 7 days". Evaluate audiences in [`audience_order`] so `in audience` reads fresh values;
//! [`AudienceSet`] does that for all audiences of a workspace.

mod ast;
mod compare;
mod defs;
mod deps;
mod error;
mod eval;
mod fact;
mod lazy;
mod lex;
mod name_map;
mod parse;
mod print;
mod set;
mod state;

#[cfg(test)]
pub(crate) mod gen;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use ast::{
    Comparison, CountOp, DeviceField, Duration, EventSelector, Literal, Order, PropCond, Rule,
    TimeRef, UtmField, Which, MAX_DURATION_MS,
};
pub use compare::{as_time, holds, parse_date};
pub use defs::{
    state_mut, Activation, AudienceDefinition, ComputedDefinition, DefinitionError, Definitions,
};
pub use deps::{audience_order, check_refs, Catalog, Dependencies};
pub use error::{OrderError, ParseError, RuleError};
pub use eval::{evaluate, selector_matches};
pub use fact::{
    lookup, property_keys, top_key, ChannelFact, DeviceFact, EventFact, FactFields, ProfileFacts,
};
pub use lazy::LazyActivation;
pub use name_map::NameMap;
pub use parse::{parse_with_refs, RefKind, Reference, MAX_DEPTH};
pub use set::AudienceSet;
pub use state::{AudienceState, Keys, SlotState, Slots, Stamps};

/// Parses the text form.
pub fn parse(src: &str) -> Result<Rule, ParseError> {
    parse_with_refs(src).map(|(r, _)| r)
}

/// Parses the text form and checks that every computed trait and audience it names exists.
pub fn parse_checked(src: &str, catalog: &Catalog) -> Result<Rule, ParseError> {
    let (rule, refs) = parse_with_refs(src)?;
    check_refs(src, &refs, catalog)?;
    Ok(rule)
}

/// Reads the JSON form. It is accepted only if its canonical text parses back to the same
/// rule (which rules out what the text cannot say: an `and` of one rule, an empty name, `now`
/// in a where clause…); with a catalog, references are checked too. Positions in errors
/// refer to the canonical text (`rule.to_string()`).
pub fn from_json(json: &str, catalog: Option<&Catalog>) -> Result<Rule, RuleError> {
    let rule: Rule = serde_json::from_str(json).map_err(|e| RuleError::Json(e.to_string()))?;
    let text = rule.to_string();
    let (back, refs) = parse_with_refs(&text).map_err(RuleError::Invalid)?;
    if back != rule {
        return Err(RuleError::Json(format!(
            "the rule has no text form (e.g. an `and`/`or` with fewer than two rules, or a \
             value out of range); its nearest text is: {text}"
        )));
    }
    if let Some(c) = catalog {
        check_refs(&text, &refs, c).map_err(RuleError::Invalid)?;
    }
    Ok(rule)
}

/// The JSON form (pretty-printed, stable key order).
pub fn to_json(rule: &Rule) -> String {
    serde_json::to_string_pretty(rule).unwrap_or_default()
}

/// A rule ready for evaluation: its event conditions numbered and its inputs listed.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    pub rule: Rule,
    /// The event conditions, in [`Rule::walk`] order: slot `i` of an [`AudienceState`].
    pub leaves: Vec<Rule>,
    pub deps: Dependencies,
    /// Some non-event condition compares with a time relative to now (`trait signup <
    /// now - 30d`): only then can the facts alone flip by time, and
    /// [`AudienceState::next_change`] walks the rule for them (it runs per evaluation).
    pub facts_by_time: bool,
}

/// Prepares a rule for incremental evaluation.
pub fn compile(rule: Rule) -> CompiledRule {
    let mut leaves = Vec::new();
    let mut facts_by_time = false;
    rule.walk(&mut |r| {
        if r.is_event_condition() {
            leaves.push(r.clone());
        }
        if let Rule::Trait { cmp, .. }
        | Rule::Computed { cmp, .. }
        | Rule::GroupTrait { cmp, .. }
        | Rule::Utm { cmp, .. }
        | Rule::Device { cmp, .. } = r
        {
            facts_by_time |= compare::depends_on_now(cmp);
        }
    });
    let deps = Dependencies::of(&rule);
    CompiledRule {
        rule,
        leaves,
        deps,
        facts_by_time,
    }
}
