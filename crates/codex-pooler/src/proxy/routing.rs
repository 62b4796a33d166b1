//! Choosing the order in which a Pool's accounts are tried: rendezvous
//! (highest-random-weight) hashing of each assignment against a per-request
//! seed. A session anchor as seed keeps a conversation on the same account;
//! without one the seed is random, spreading load.

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::health::{CircuitState, Health};
use crate::runtime::{Candidate, PoolSnapshot};

/// Where the routing seed came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub kind: &'static str,
    pub value: String,
}

/// Which request anchors may seed routing, from the Pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPolicy {
    /// Codex session headers (`sticky_websocket_sessions`).
    pub session_anchors: bool,
    /// The body's `prompt_cache_key` (`prompt_cache_affinity_enabled`).
    pub prompt_cache_key: bool,
    /// The client's `x-request-id` (`sticky_http_sessions`).
    pub request_correlation: bool,
}

impl Default for SeedPolicy {
    fn default() -> Self {
        SeedPolicy {
            session_anchors: true,
            prompt_cache_key: true,
            request_correlation: false,
        }
    }
}

/// Picks the seed, strongest anchor first: a Codex session header, an
/// `Idempotency-Key`, the `prompt_cache_key`, the client's request id; else
/// a random value. Only a fingerprint of the seed is ever recorded.
pub fn seed_for(
    headers: &axum::http::HeaderMap,
    body: Option<&serde_json::Map<String, Value>>,
    policy: SeedPolicy,
) -> Seed {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    if policy.session_anchors {
        // The turn state is handled as a pin, not a seed: it names the account
        // that served the turn.
        for (kind, name) in [
            ("window_id", "x-codex-window-id"),
            ("session_id", "x-codex-session-id"),
            ("session_id", "session-id"),
            ("session_id", "x-session-id"),
            ("session_id", "x-session-affinity"),
            ("session_id", "session_id"),
            ("conversation_id", "x-codex-conversation-id"),
        ] {
            if let Some(v) = header(name) {
                return Seed {
                    kind,
                    value: v.to_owned(),
                };
            }
        }
    }
    if let Some(v) = header("idempotency-key") {
        return Seed {
            kind: "idempotency_key",
            value: v.to_owned(),
        };
    }
    if policy.prompt_cache_key
        && let Some(key) = body
            .and_then(|b| b.get("prompt_cache_key"))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    {
        return Seed {
            kind: "prompt_cache_key",
            value: key.to_owned(),
        };
    }
    if policy.request_correlation
        && let Some(v) = header("x-request-id")
    {
        return Seed {
            kind: "request_correlation",
            value: v.to_owned(),
        };
    }
    Seed {
        kind: "random",
        value: format!("{:016x}", rand::random::<u64>()),
    }
}

impl Seed {
    /// A short, non-reversible fingerprint for logs and request metadata.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(self.value.as_bytes())[..8])
    }
}

fn weight(seed: &str, assignment_id: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut hasher);
    assignment_id.hash(&mut hasher);
    hasher.finish()
}

/// Assignment ids in rendezvous order for `seed` (highest weight first).
pub fn rendezvous_order<'a>(
    seed: &str,
    assignment_ids: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut scored: Vec<(u64, &str)> = assignment_ids
        .into_iter()
        .map(|id| (weight(seed, id), id))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, id)| id).collect()
}

/// The routing decision for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Candidates to try, in order (at most the Pool's ring size).
    pub ring: Vec<Candidate>,
    /// Why each other assignment was left out.
    pub excluded: Vec<(String, &'static str)>,
    /// Earliest quota reset among accounts left out for exhausted quota.
    pub earliest_quota_reset: Option<i64>,
    pub explanation: Value,
}

/// What a continuation pin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// No pin, or the pinned assignment is gone from the Pool: route normally.
    None,
    /// The pinned account can serve: it leads the ring.
    Usable(String),
    /// The pinned account cannot serve now.
    Unavailable,
    /// The pinned account needs reauthorization.
    ReauthRequired,
}

/// Checks a pinned assignment against the Pool.
pub fn check_pin(pool: &PoolSnapshot, pinned_assignment: Option<&str>, now_secs: i64) -> PinCheck {
    let Some(id) = pinned_assignment else {
        return PinCheck::None;
    };
    let Some(c) = pool.candidates.iter().find(|c| c.assignment_id == id) else {
        return PinCheck::None;
    };
    match c.exclusion {
        Some("identity_reauth_required") => PinCheck::ReauthRequired,
        Some(_) => PinCheck::Unavailable,
        None if c.identity.is_exhausted(now_secs) => PinCheck::Unavailable,
        None => PinCheck::Usable(id.to_owned()),
    }
}

/// What routing needs besides the Pool and the seed.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub now: i64,
    pub health: &'a Health,
    pub model: &'a str,
    pub route_class: &'static str,
}

/// Orders the Pool's candidates for a request; a usable pin goes first and alone.
pub fn plan_with_pin(pool: &PoolSnapshot, seed: &Seed, inputs: Inputs<'_>, pin: &PinCheck) -> Plan {
    let mut plan = plan(pool, seed, inputs);
    if let PinCheck::Usable(id) = pin
        && let Some(pos) = plan.ring.iter().position(|c| &c.assignment_id == id)
    {
        // A pinned continuation has no alternates: its state lives on that account.
        let pinned = plan.ring.remove(pos);
        plan.ring = vec![pinned];
        if let Some(obj) = plan.explanation.as_object_mut() {
            obj.insert("pinned_assignment_id".into(), json!(id));
        }
    }
    plan
}

/// Filters the Pool's candidates (lifecycle, quota, circuit) and orders the
/// rest: a conversation anchor keeps rendezvous order on that anchor (cache
/// and continuity locality); otherwise the Pool's strategy decides. Demoted
/// accounts go last; the ring is cut to the Pool's ring size.
pub fn plan(pool: &PoolSnapshot, seed: &Seed, inputs: Inputs<'_>) -> Plan {
    let now = inputs.now;
    let mut excluded = Vec::new();
    let mut earliest_quota_reset: Option<i64> = None;
    let mut usable: Vec<&Candidate> = Vec::new();
    for c in &pool.candidates {
        if let Some(reason) = c.exclusion {
            excluded.push((c.assignment_id.clone(), reason));
        } else if c.identity.is_exhausted(now) {
            let reset = c.identity.exhausted_until();
            earliest_quota_reset = Some(earliest_quota_reset.map_or(reset, |e: i64| e.min(reset)));
            excluded.push((c.assignment_id.clone(), "quota_exhausted"));
        } else if inputs
            .health
            .circuit(&c.assignment_id, inputs.model, inputs.route_class, now)
            == CircuitState::Open
        {
            excluded.push((c.assignment_id.clone(), "routing_circuit_open"));
        } else {
            usable.push(c);
        }
    }
    let rendezvous = rendezvous_order(&seed.value, usable.iter().map(|c| c.assignment_id.as_str()));
    let rank = |id: &str| {
        rendezvous
            .iter()
            .position(|r| *r == id)
            .unwrap_or(usize::MAX)
    };
    let mut ordered: Vec<&Candidate> = usable.clone();
    ordered.sort_by_key(|c| rank(&c.assignment_id));
    let strategy_applied = if seed.kind != "random" {
        "affinity"
    } else {
        pool.strategy.as_str()
    };
    match strategy_applied {
        "deterministic_rotation" => {
            ordered.sort_by(|a, b| a.assignment_id.cmp(&b.assignment_id));
            if !ordered.is_empty() {
                let shift = (inputs.health.next_rotation() % ordered.len() as u64) as usize;
                ordered.rotate_left(shift);
            }
        }
        "least_recent_success" => {
            ordered.sort_by_key(|c| {
                (
                    inputs
                        .health
                        .last_success(&c.assignment_id)
                        .unwrap_or(i64::MIN),
                    rank(&c.assignment_id),
                )
            });
        }
        "quota_first" => {
            ordered.sort_by(|a, b| {
                let score = |c: &Candidate| c.identity.remaining_quota(now).unwrap_or(100.0);
                score(b)
                    .total_cmp(&score(a))
                    .then_with(|| rank(&a.assignment_id).cmp(&rank(&b.assignment_id)))
            });
        }
        _ => {}
    }
    // Stable: keeps the order among demoted and among healthy accounts.
    ordered.sort_by_key(|c| inputs.health.is_demoted(&c.assignment_id, now));
    let ring: Vec<Candidate> = ordered
        .iter()
        .take(pool.ring_size)
        .map(|c| (*c).clone())
        .collect();
    let explanation = json!({
        "strategy": pool.strategy,
        "applied": strategy_applied,
        "seed_kind": seed.kind,
        "seed_fingerprint": seed.fingerprint(),
        "ring_size": pool.ring_size,
        "route_class": inputs.route_class,
        "ring": ring.iter().enumerate().map(|(i, c)| json!({"rank": i + 1, "assignment_id": c.assignment_id, "label": c.label,
            "demoted": inputs.health.is_demoted(&c.assignment_id, now)})).collect::<Vec<_>>(),
        "excluded": excluded.iter().map(|(id, reason)| json!({"assignment_id": id, "reasons": [reason]})).collect::<Vec<_>>(),
    });
    Plan {
        ring,
        excluded,
        earliest_quota_reset,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_stable_for_a_seed_and_varies_across_seeds() {
        let ids = ["a", "b", "c", "d"];
        let first = rendezvous_order("seed-1", ids);
        assert_eq!(first, rendezvous_order("seed-1", ids));
        assert_eq!(first.len(), 4);
        let firsts: std::collections::HashSet<_> = (0..64)
            .map(|i| rendezvous_order(&format!("s{i}"), ids)[0])
            .collect();
        assert!(
            firsts.len() > 1,
            "different seeds should lead to different first picks"
        );
    }

    #[test]
    fn removing_one_assignment_keeps_the_others_relative_order() {
        let full = rendezvous_order("k", ["a", "b", "c", "d"]);
        let without_b: Vec<_> = full.iter().copied().filter(|id| *id != "b").collect();
        assert_eq!(rendezvous_order("k", ["a", "c", "d"]), without_b);
    }
}
