//! What an applied event changed of the facts audiences read besides its event conditions
//! (traits, channels, devices, groups, consent): the engine re-evaluates only the audiences
//! reading something that changed ([`super::activate::Engine::on_event`]).

use super::activate::Engine;
use spoor_core::profile::{channel_key, device_key, EventView, Profile};
use spoor_core::EventType;

/// What an event changed besides its event conditions.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// Positions in the engine's trait keys of the traits whose value the event changed
    /// (not merely stated: most `identify` calls repeat traits the person already has).
    pub traits: Vec<usize>,
    pub channels: bool,
    pub devices: bool,
    pub groups: bool,
    /// The event stated consent.
    pub consent: bool,
}

impl Touched {
    /// The event changed none of these facts.
    pub fn is_quiet(&self) -> bool {
        self.traits.is_empty() && !(self.channels || self.devices || self.groups || self.consent)
    }
}

/// The values of the traits audiences read before an event is applied (empty for an event
/// that states no traits, the only ones that can change them): see [`Engine::touched`].
pub struct TraitsBefore(Vec<Option<serde_json::Value>>);

impl Engine {
    /// Takes [`TraitsBefore`] of `p`, before `view` is applied to it.
    pub fn traits_before(&self, view: &EventView, p: &Profile) -> TraitsBefore {
        if view.traits.is_none() {
            return TraitsBefore(Vec::new());
        }
        TraitsBefore(
            self.trait_keys
                .iter()
                .map(|k| p.trait_value(k).cloned())
                .collect(),
        )
    }

    /// What applying `view` to `p` (already applied) changed of the facts audiences read.
    /// Traits count as touched only when their value changed (compared with `before`).
    /// Channels and devices count as touched only when the person's list of them changed —
    /// a new channel or device, or an earlier event becoming a channel's first touch (its
    /// UTM is the one shown): most events arrive through a channel and device the person
    /// already has, and re-evaluating every UTM/device audience for those was most of the
    /// per-event cost.
    pub fn touched(
        &self,
        view: &EventView,
        p: &Profile,
        consent: bool,
        before: TraitsBefore,
    ) -> Touched {
        let channels = view
            .utm
            .as_ref()
            .and_then(channel_key)
            .and_then(|k| p.channels.get(&k))
            .is_some_and(|c| c.first_seq == view.seq);
        // `DeviceStat::add` bumps the count of a known device: 1 means this event added it.
        let devices = view
            .user_agent
            .as_ref()
            .and_then(|ua| p.devices.get(&device_key(ua)))
            .is_some_and(|d| d.count == 1);
        let traits = before
            .0
            .iter()
            .zip(&self.trait_keys)
            .enumerate()
            .filter(|(_, (was, k))| was.as_ref() != p.trait_value(k))
            .map(|(i, _)| i)
            .collect();
        Touched {
            traits,
            channels,
            devices,
            groups: view.kind == EventType::Group,
            consent,
        }
    }
}
