//! Stage 3 of the processor: computed traits and audiences, in real time.
//!
//! Each applied event updates the person's incremental states (`Profile::activation`,
//! see `spoor_core::audience::Activation`) and re-evaluates their memberships; a change
//! becomes a bitmap update, a history row and a change-feed row (what destinations and
//! journeys consume), all committed with the checkpoint. Time alone also changes
//! membership ("bought in the last 7 days"): every person whose state can change without a
//! new event has one durable timer at the earliest such moment, and the processor fires due
//! timers between batches.
//!
//! The rules come from [`DefsHandle`]; when they change, everything derived from them is
//! recomputed from the log ([`super::backfill`]) before processing goes on.

use super::touched::Touched;
use crate::defs::DefsHandle;
use smallvec::{smallvec, SmallVec};
use spoor_core::audience::{
    property_keys, state_mut, top_key, Activation, AudienceSet, AudienceState, CompiledRule,
    Definitions, Dependencies, EventFact, FactFields, ProfileFacts,
};
use spoor_core::computed::{ComputedSet, ComputedState};
use spoor_core::identity::ProfileId;
use spoor_core::profile::{EventView, Profile};
use spoor_store::state::{ChangeCause, MembershipChange, ProcessorState};
use std::collections::BTreeSet;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The compiled definitions the processor evaluates.
pub struct Engine {
    pub defs: DefsHandle,
    /// The definitions revision compiled below.
    pub revision: u64,
    /// The definitions compiled below (a backfill records them as what the state reflects,
    /// and the next one compares against them).
    pub definitions: Arc<Definitions>,
    pub audiences: AudienceSet,
    pub computed: ComputedSet,
    /// No definitions at all: every stage below is skipped.
    pub idle: bool,
    /// The wall clock in ms (injected, so tests run at fixed times).
    pub now: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Consent purposes and defaults, for `consented to` conditions.
    pub consent: Arc<spoor_core::consent::ConsentRules>,
    /// The audiences in nesting order, with what each depends on as indexes into this
    /// list (evaluation walks it without name lookups).
    slots: Vec<Slot>,
    /// Event name → slots whose event selectors name it; `any_name`: slots with a selector
    /// that names no event (type-only or any event). Only these can match an event.
    by_event: HashMap<String, Vec<usize>>,
    any_name: Vec<usize>,
    /// The top-level event properties any definition reads: [`Engine::fact`] parses only
    /// these.
    keys: BTreeSet<String>,
    /// Every event name some selector (of an audience or a computed trait) names, and
    /// whether some selector names none: see [`Engine::fact`].
    named: HashSet<String>,
    any_name_selector: bool,
    /// The top-level group traits any audience reads (empty: group traits are never
    /// loaded, and a change of a group's traits re-evaluates no one).
    group_keys: BTreeSet<String>,
    /// The top-level traits any audience reads, sorted: [`Engine::fill`] copies only these
    /// (a rule looks a trait path up by its top-level key first, so it sees the same
    /// values); positions in this list are what [`super::touched::Touched::traits`] names.
    pub(super) trait_keys: Vec<String>,
    /// The UTM and device fields some rule reads: the only ones copied into the facts.
    fields: FactFields,
    /// The audiences some audience nests on: the only memberships `fill` copies.
    nested: BTreeSet<String>,
    /// Every audience's name: a hash lookup per membership on every evaluation (looking
    /// for memberships of deleted audiences) instead of a B-tree search among the rules.
    known: HashSet<String>,
}

/// One flag per audience or computed trait for one event: on the stack up to 64 (one
/// allocation per flag vector per event otherwise).
type Flags = SmallVec<[bool; 64]>;

/// The traits of the person's groups, as plain values (what `group trait` conditions read;
/// empty unless [`Engine::reads_groups`]).
pub type GroupFacts = [serde_json::Map<String, serde_json::Value>];

struct Slot {
    /// Shared with every person's maps keyed by it (a new key is an `Arc` increment).
    name: Arc<str>,
    rule: CompiledRule,
    /// Indexes of the audiences this one reads (all earlier in the order).
    reads: Vec<usize>,
    /// The parts of the person's facts the rule reads (`TRAITS`, `COMPUTED`…).
    needs: u8,
    /// Positions in [`Engine::trait_keys`] of the traits the rule reads.
    traits: Vec<usize>,
    /// Positions in [`Engine::computed`] of the computed traits the rule reads.
    computed: Vec<usize>,
    /// For a rule that reads events only (`needs == 0`): whether it holds for a person none
    /// of whose events it selects. Such a person's state is the empty one, whose every
    /// condition is constant (a count of 0, no first/last time, no funnel step — none
    /// depends on `now`, and none has a next change), so the evaluation is skipped.
    empty: Option<bool>,
}

impl Slot {
    /// Whether the rule reads a fact the event changed besides its event conditions.
    fn reads_touched(&self, touched: &Touched) -> bool {
        let deps = &self.rule.deps;
        self.traits.iter().any(|t| touched.traits.contains(t))
            || touched.channels && deps.channels
            || touched.devices && deps.devices
            || touched.groups && !deps.group_traits.is_empty()
            || touched.consent && deps.consent
    }
}

/// Membership changes of one evaluation, and the person's timer before and after.
#[derive(Debug, Default)]
pub struct Outcome {
    pub entered: Vec<String>,
    pub exited: Vec<String>,
    pub old_timer: Option<i64>,
    pub new_timer: Option<i64>,
}

impl Engine {
    /// Compiles the current definitions. Definitions that do not compile (they were
    /// validated when stored, so this means a bug) are logged and treated as none.
    pub fn new(defs: DefsHandle, now: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        let mut e = Self {
            defs,
            revision: u64::MAX,
            definitions: Arc::default(),
            audiences: empty_set(),
            computed: ComputedSet::default(),
            idle: true,
            now,
            consent: Arc::default(),
            slots: Vec::new(),
            by_event: HashMap::new(),
            any_name: Vec::new(),
            keys: BTreeSet::new(),
            named: HashSet::new(),
            any_name_selector: false,
            group_keys: BTreeSet::new(),
            trait_keys: Vec::new(),
            fields: FactFields::default(),
            nested: BTreeSet::new(),
            known: HashSet::new(),
        };
        e.reload();
        e
    }

    fn index(&mut self) {
        let order = self.audiences.order().to_vec();
        let pos: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        self.slots = order
            .iter()
            .filter_map(|n| {
                let rule = self.audiences.get(n)?.clone();
                let reads = rule
                    .deps
                    .audiences
                    .iter()
                    .filter_map(|a| pos.get(a.as_str()).copied())
                    .collect();
                let needs = needs(&rule.deps);
                let empty = (needs == 0).then(|| {
                    AudienceState::new(&rule).evaluate(&rule, &ProfileFacts::default(), 0)
                });
                Some(Slot {
                    name: Arc::from(n.as_str()),
                    needs,
                    empty,
                    computed: rule
                        .deps
                        .computed
                        .iter()
                        .filter_map(|c| self.computed.index_of(c))
                        .collect(),
                    traits: Vec::new(),
                    rule,
                    reads,
                })
            })
            .collect();
        self.known = self.slots.iter().map(|s| s.name.to_string()).collect();
        self.keys.clear();
        self.group_keys.clear();
        self.trait_keys.clear();
        self.nested.clear();
        let mut trait_keys = BTreeSet::new();
        self.fields = FactFields::default();
        for slot in &self.slots {
            self.fields = self.fields.union(slot.rule.deps.fields);
            self.group_keys
                .extend(slot.rule.deps.group_traits.iter().cloned());
            trait_keys.extend(slot.rule.deps.traits.iter().cloned());
            self.nested.extend(slot.rule.deps.audiences.iter().cloned());
            for sel in &slot.rule.deps.events {
                property_keys(sel, &mut self.keys);
            }
        }
        self.trait_keys = trait_keys.into_iter().collect();
        for slot in &mut self.slots {
            slot.traits = slot
                .rule
                .deps
                .traits
                .iter()
                .filter_map(|t| self.trait_keys.binary_search(t).ok())
                .collect();
        }
        self.named.clear();
        self.any_name_selector = false;
        let selectors = self.slots.iter().flat_map(|s| &s.rule.deps.events);
        let computed = (0..self.computed.len()).map(|i| &self.computed.at(i).event);
        for sel in selectors.chain(computed) {
            match &sel.name {
                Some(n) => {
                    self.named.insert(n.clone());
                }
                None => self.any_name_selector = true,
            }
        }
        for name in self.computed.names() {
            if let Some(def) = self.computed.get(name) {
                property_keys(&def.event, &mut self.keys);
                if let Some(p) = &def.property {
                    self.keys.insert(top_key(p).to_owned());
                }
            }
        }
        self.by_event.clear();
        self.any_name.clear();
        for (i, slot) in self.slots.iter().enumerate() {
            let mut any = false;
            let mut names = BTreeSet::new();
            for sel in &slot.rule.deps.events {
                match &sel.name {
                    Some(n) => {
                        names.insert(n.clone());
                    }
                    None => any = true,
                }
            }
            if any {
                self.any_name.push(i);
            } else {
                for n in names {
                    self.by_event.entry(n).or_default().push(i);
                }
            }
        }
    }

    /// What the definitions need to know about one event (its properties limited to the
    /// ones they read).
    /// An event no selector can match (its name is named by none, and every selector names
    /// one) gets no properties: none would be read, and most events (pages) are such.
    pub fn fact(&self, view: &EventView) -> EventFact {
        let read =
            self.any_name_selector || view.selector_name().is_some_and(|n| self.named.contains(n));
        if read {
            EventFact::from_view_keys(view, &self.keys)
        } else {
            EventFact::from_view_keys(view, &BTreeSet::new())
        }
    }

    /// Whether any audience has a `group trait` condition (only then are the person's groups
    /// loaded for an evaluation).
    pub fn reads_groups(&self) -> bool {
        !self.group_keys.is_empty()
    }

    /// Whether a group's traits changed in a way some audience can see (a trait it reads).
    pub fn group_traits_changed(
        &self,
        before: &serde_json::Map<String, serde_json::Value>,
        after: &serde_json::Map<String, serde_json::Value>,
    ) -> bool {
        self.group_keys
            .iter()
            .any(|k| before.get(k) != after.get(k))
    }

    /// The top-level event properties any definition reads.
    pub fn keys(&self) -> &BTreeSet<String> {
        &self.keys
    }

    /// Recompiles if the definitions changed; returns whether they did.
    pub fn reload(&mut self) -> bool {
        let d = self.defs.current();
        if d.revision == self.revision {
            return false;
        }
        match d.compile() {
            Ok((a, c)) => {
                self.audiences = a;
                self.computed = c;
                self.idle = d.audiences.is_empty() && d.computed.is_empty();
                self.index();
                self.definitions = d.clone();
            }
            Err(e) => {
                tracing::error!(error = %e, revision = d.revision, "definitions do not compile; audiences are not evaluated");
                self.audiences = empty_set();
                self.computed = ComputedSet::default();
                self.idle = true;
                self.index();
                // What is evaluated is no definitions at all.
                self.definitions = Arc::new(Definitions {
                    revision: d.revision,
                    ..Definitions::default()
                });
            }
        }
        self.revision = d.revision;
        true
    }

    /// Applies one event of the person and re-evaluates, at `now_ms`, what the event can
    /// have changed: audiences whose event conditions it matches, whose traits, channels,
    /// devices or computed traits it touched, and audiences nested on any that changed.
    /// The others cannot have changed (time alone is covered by their timers).
    /// `full` re-evaluates everything (after a merge).
    pub fn on_event(
        &self,
        p: &mut Profile,
        ev: &EventFact,
        touched: Touched,
        now_ms: i64,
        full: bool,
        groups: &GroupFacts,
    ) -> Outcome {
        if !full && self.inert(&p.activation, ev, &touched) {
            let t = p.activation.next_timer_ms;
            return Outcome {
                old_timer: t,
                new_timer: t,
                ..Outcome::default()
            };
        }
        let mut act = p.take_activation();
        let full = full || act.revision != self.revision;
        let mut matched: Flags = smallvec![false; self.slots.len()];
        let computed = self.fold(&mut act, ev, &mut matched);
        if full {
            self.refresh_computed(&mut act, now_ms);
        }
        // The computed traits whose value changed: only audiences reading one of those can
        // have changed through them (a `count` changes on every event it selects, but a
        // `max`, a `most_frequent` or a distinct list mostly do not).
        let mut values_changed: Flags = smallvec![
            false;
            if computed.is_empty() {
                0
            } else {
                self.computed.len()
            }
        ];
        for &c in &computed {
            let def = self.computed.at(c);
            let name = def.name.as_str();
            if let Some(s) = act.computed.get_mut(name) {
                ComputedState::prune_shared(s, def, now_ms);
                let v = s.value(def, now_ms);
                if v.as_ref() == act.values.get(name) {
                    continue;
                }
                values_changed[c] = true;
                // The values are copied (if shared with readers) only when one changed.
                let values = Arc::make_mut(&mut act.values);
                match (v, values.get_mut(name)) {
                    (Some(v), Some(slot)) => *slot = v,
                    (Some(v), None) => {
                        values.insert(name.to_owned(), v);
                    }
                    (None, _) => {
                        values.remove(name);
                    }
                };
            }
        }
        if !computed.is_empty() {
            act.computed_next = self.computed.next_change(&act.computed, now_ms);
        }
        let out = self.reevaluate(p, &mut act, now_ms, groups, full, |i, _, changed| {
            let slot = &self.slots[i];
            full || matched[i]
                || slot.reads_touched(&touched)
                || slot
                    .computed
                    .iter()
                    .any(|c| values_changed.get(*c) == Some(&true))
                || slot.reads.iter().any(|r| changed[*r])
        });
        p.activation = act.into();
        out
    }

    /// Whether `ev` can change nothing of a person's activation `act`: no definition
    /// selects it, it changed none of the facts an audience reads, and the person was
    /// evaluated under these definitions (their timer is the earliest next change, as
    /// every evaluation leaves it). [`Self::on_event`] would fold nothing, re-evaluate
    /// nothing and find the timer unchanged, after copying the activation (shared with
    /// readers since the person's last change, so most of the time): for page views
    /// through a channel and device the person already has, and `identify` calls
    /// repeating known traits (much of a site's traffic), that copy, and freeing it
    /// later, was all it did.
    fn inert(&self, act: &Activation, ev: &EventFact, touched: &Touched) -> bool {
        let selected = !self.any_name.is_empty()
            || ev
                .name
                .as_deref()
                .is_some_and(|n| self.by_event.contains_key(n))
            || self.computed.may_select(ev);
        let read = !touched.is_quiet() && self.slots.iter().any(|s| s.reads_touched(touched));
        !selected
            && !read
            && act.revision == self.revision
            && act.earliest_next() == act.next_timer_ms
    }

    /// Applies one event to the person's computed-trait and audience states, without
    /// evaluating anything (the real-time path evaluates after; a backfill folds a
    /// person's whole history first). Sets `matched[i]` for the audience slots the event
    /// applied to; returns the positions (in `self.computed`) of the computed traits it
    /// touched.
    pub fn fold(&self, act: &mut Activation, ev: &EventFact, matched: &mut [bool]) -> Vec<usize> {
        let computed = self.computed.apply_at(&mut act.computed, ev);
        // Only slots whose selectors name this event (or no event) can match it.
        let named = ev.name.as_deref().and_then(|n| self.by_event.get(n));
        for &i in named.into_iter().flatten().chain(&self.any_name) {
            let slot = &self.slots[i];
            if slot.rule.deps.event_matters(ev) {
                state_mut(&mut act.audiences, &slot.name, || {
                    AudienceState::new(&slot.rule)
                })
                .apply(&slot.rule, ev);
                if let Some(m) = matched.get_mut(i) {
                    *m = true;
                }
            }
        }
        computed
    }

    /// Re-evaluates everything at `now_ms` with no new event (a timer fired, a backfill, a
    /// merge).
    pub fn on_time(&self, p: &mut Profile, now_ms: i64, groups: &GroupFacts) -> Outcome {
        let mut act = p.take_activation();
        self.refresh_computed(&mut act, now_ms);
        let out = self.reevaluate(p, &mut act, now_ms, groups, true, |_, _, _| true);
        p.activation = act.into();
        out
    }

    /// Evaluates, at `now_ms`, only the audiences `only` selects, leaving the rest of the
    /// activation and its revision stamp as they are. For a backfill that only added
    /// audiences reading events alone, which no other audience reads: nothing else the
    /// person has can change with them, so evaluating every audience and computed trait
    /// (`on_time`) would only redo the person's last evaluation. A stamp left older than
    /// the definitions makes their next event or timer evaluate everything, as for every
    /// person the backfill did not concern.
    pub fn on_added(&self, p: &mut Profile, now_ms: i64, only: impl Fn(&str) -> bool) -> Outcome {
        let mut act = p.take_activation();
        let out = self.reevaluate(p, &mut act, now_ms, &[], false, |i, _, _| {
            only(&self.slots[i].name)
        });
        p.activation = act.into();
        out
    }

    /// [`Self::on_added`] on `act`, holding only what the added audiences have (states,
    /// memberships, next changes), while the rest of the person's activation stays
    /// encoded: the backfill splices the result into it
    /// (`spoor_core::codec::ActivationView::splice`), which also recomputes the timer
    /// (`new_timer` here counts only `act`). Exact for audiences that read events alone
    /// ([`super::backfill::plan::Plan::only_added`]): no other part of the person is read.
    pub fn on_added_alone(
        &self,
        act: &mut Activation,
        now_ms: i64,
        only: impl Fn(&str) -> bool,
    ) -> Outcome {
        let nobody = Profile::new(ProfileId::from_raw(0));
        self.reevaluate(&nobody, act, now_ms, &[], false, |i, _, _| {
            only(&self.slots[i].name)
        })
    }

    /// Re-evaluates, at `now_ms`, the audiences with group-trait conditions (and those
    /// nested on one that changed): a group the person belongs to changed its traits
    /// through another member's `group` call.
    pub fn on_group(&self, p: &mut Profile, now_ms: i64, groups: &GroupFacts) -> Outcome {
        let mut act = p.take_activation();
        if act.revision != self.revision {
            // Not evaluated under these definitions yet: everything, as its next event would.
            p.activation = act.into();
            return self.on_time(p, now_ms, groups);
        }
        let out = self.reevaluate(p, &mut act, now_ms, groups, false, |i, deps, changed| {
            !deps.group_traits.is_empty() || self.slots[i].reads.iter().any(|r| changed[*r])
        });
        p.activation = act.into();
        out
    }

    /// Every computed value and the computed traits' next change, from their states.
    fn refresh_computed(&self, act: &mut Activation, now_ms: i64) {
        act.revision = self.revision;
        // States of definitions that no longer exist are dropped here, lazily.
        act.audiences.retain(|n, _| self.audiences.get(n).is_some());
        act.next.retain(|n, _| self.audiences.get(n).is_some());
        act.computed.retain(|n, _| self.computed.get(n).is_some());
        self.computed.prune(&mut act.computed, now_ms);
        let values = self.computed.values(&act.computed, now_ms);
        if *act.values != values {
            act.values = Arc::new(values);
        }
        act.computed_next = self.computed.next_change(&act.computed, now_ms);
    }

    /// Folds a merged-away person's states into the survivor's (identity merge). The
    /// survivor is re-evaluated by the event that caused the merge.
    pub fn merge(&self, into: &mut Activation, other: Activation) {
        self.computed.merge(&mut into.computed, other.computed);
        for (name, s) in other.audiences {
            let Some(rule) = self.audiences.get(&name) else {
                continue;
            };
            match into.audiences.get_mut(&name) {
                Some(mine) => Arc::make_mut(mine).merge(rule, Arc::unwrap_or_clone(s)),
                None => {
                    into.audiences.insert(name, s);
                }
            }
        }
    }

    /// Evaluates, in nesting order, the audiences `dirty` selects (given the audiences
    /// whose membership changed so far), updating memberships, per-audience next changes
    /// and the person's timer. `full`: the first evaluation under these definitions (only
    /// then can the person be a member of an audience that no longer exists).
    fn reevaluate(
        &self,
        p: &Profile,
        act: &mut Activation,
        now_ms: i64,
        groups: &GroupFacts,
        full: bool,
        dirty: impl Fn(usize, &Dependencies, &[bool]) -> bool,
    ) -> Outcome {
        let mut out = Outcome {
            old_timer: act.next_timer_ms,
            ..Outcome::default()
        };
        if full {
            // Members that no longer exist as audiences leave. Memberships are only added
            // for the audiences of the revision evaluated, and a person evaluated under an
            // older one is evaluated in full on their next event or timer.
            let gone: Vec<Arc<str>> = act
                .members
                .keys()
                .filter(|n| !self.known.contains(&***n))
                .cloned()
                .collect();
            for n in gone {
                act.members.remove(&n);
                out.exited.push(n.to_string());
            }
        }
        let mut changed: Flags = smallvec![false; self.slots.len()];
        // The facts are built part by part, as the audiences evaluated need them: most
        // events re-evaluate a few audiences that read events only, and copying the
        // person's traits, channels, devices and values for them was a large part of the
        // per-event cost. A rule reads only the parts its `Dependencies` name.
        let mut f = ProfileFacts::default();
        let mut built = 0u8;
        for (i, slot) in self.slots.iter().enumerate() {
            let (name, rule) = (&slot.name, &slot.rule);
            if !dirty(i, &rule.deps, &changed) {
                continue;
            }
            if slot.needs & !built != 0 {
                self.fill(&mut f, slot.needs & !built, p, act, groups);
                built |= slot.needs;
            }
            let f = &mut f;
            let (member, next) = match (act.audiences.get(name).map(|s| &**s), slot.empty) {
                (Some(s), _) => (s.evaluate(rule, f, now_ms), s.next_change(rule, f, now_ms)),
                // No event of the person ever applied to a rule that reads events only:
                // the answer is the empty state's, known since compile time (most
                // audiences for a new person's first, full, evaluation).
                (None, Some(holds)) => (holds, None),
                (None, None) => {
                    let s = AudienceState::new(rule);
                    (s.evaluate(rule, f, now_ms), s.next_change(rule, f, now_ms))
                }
            };
            match (next, act.next.get_mut(name)) {
                (Some(t), Some(slot_t)) => *slot_t = t,
                (Some(t), None) => {
                    act.next.insert(name.clone(), t);
                }
                (None, Some(_)) => {
                    act.next.remove(name);
                }
                (None, None) => {}
            }
            if member != act.members.contains_key(name) {
                changed[i] = true;
                if member {
                    f.audiences.insert(name.to_string());
                    act.members.insert(name.clone(), now_ms);
                    out.entered.push(name.to_string());
                } else {
                    f.audiences.remove(&**name);
                    act.members.remove(name);
                    out.exited.push(name.to_string());
                }
            }
        }
        if built & COMPUTED != 0 {
            // `fill` lent the values to the facts (nothing above changes them).
            act.values = Arc::new(std::mem::take(&mut f.computed));
        }
        let next = act.earliest_next();
        act.next_timer_ms = next;
        out.new_timer = next;
        out
    }
}

/// Parts of [`ProfileFacts`] a rule reads (bits of `Slot::needs`).
const TRAITS: u8 = 1;
const COMPUTED: u8 = 2;
const CHANNELS: u8 = 4;
const DEVICES: u8 = 8;
const CONSENT: u8 = 16;
const AUDIENCES: u8 = 32;
const GROUPS: u8 = 64;

pub(crate) fn needs(d: &Dependencies) -> u8 {
    let mut n = 0;
    for (on, bit) in [
        (!d.traits.is_empty(), TRAITS),
        (!d.computed.is_empty(), COMPUTED),
        (d.channels, CHANNELS),
        (d.devices, DEVICES),
        (d.consent, CONSENT),
        (!d.audiences.is_empty(), AUDIENCES),
        (!d.group_traits.is_empty(), GROUPS),
    ] {
        if on {
            n |= bit;
        }
    }
    n
}

impl Engine {
    /// Fills the `parts` of `f` from the profile and its activation (memberships as they
    /// were before this evaluation; the evaluation keeps `f.audiences` current itself).
    /// Only what some rule reads is copied: the traits in `trait_keys`, the memberships in
    /// `nested`; the computed values are moved out of `act.values` (the caller moves them
    /// back once the evaluation is done).
    fn fill(
        &self,
        f: &mut ProfileFacts,
        parts: u8,
        p: &Profile,
        act: &mut Activation,
        groups: &GroupFacts,
    ) {
        if parts & TRAITS != 0 {
            f.traits = self
                .trait_keys
                .iter()
                .filter_map(|k| Some((k.clone(), p.trait_value(k)?.clone())))
                .collect();
        }
        if parts & (CHANNELS | DEVICES) != 0 {
            let from = ProfileFacts::from_profile_fields(
                p,
                false,
                parts & CHANNELS != 0,
                parts & DEVICES != 0,
                self.fields,
            );
            if parts & CHANNELS != 0 {
                f.channels = from.channels;
            }
            if parts & DEVICES != 0 {
                f.devices = from.devices;
            }
        }
        if parts & COMPUTED != 0 {
            // Moved out when this copy is the only one (a value changed, or the profile was
            // not published since), else copied.
            f.computed = Arc::unwrap_or_clone(std::mem::take(&mut act.values));
        }
        if parts & CONSENT != 0 {
            f.consents = self.consent.granted(&p.consent).into_iter().collect();
        }
        if parts & AUDIENCES != 0 {
            f.audiences = act
                .members
                .keys()
                .filter(|n| self.nested.contains(&***n))
                .map(|n| n.to_string())
                .collect();
        }
        if parts & GROUPS != 0 {
            f.groups = groups.to_vec();
        }
    }
}

fn empty_set() -> AudienceSet {
    AudienceSet::new(Default::default()).unwrap_or_else(|_| unreachable_set())
}

#[cold]
fn unreachable_set() -> AudienceSet {
    // An empty set has no cycles or unknown references; this cannot happen.
    panic!("an empty audience set must compile")
}

/// Records what one evaluation changed: bitmaps, history and feed rows, the timer.
pub fn record(
    state: &mut ProcessorState,
    pid: ProfileId,
    out: Outcome,
    at_ms: i64,
    seq: u64,
    cause: ChangeCause,
) {
    for (names, entered) in [(out.entered, true), (out.exited, false)] {
        for audience in names {
            state.set_member(&audience, pid, entered);
            let _ = state.record_membership(MembershipChange {
                audience,
                profile: pid,
                entered,
                at_ms,
                seq,
                cause,
            });
        }
    }
    if out.old_timer != out.new_timer {
        state.set_timer(pid, out.old_timer, out.new_timer);
    }
}
