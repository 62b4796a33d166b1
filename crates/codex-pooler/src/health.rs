//! Routing health kept in memory per instance: circuit breakers per
//! (assignment, model, route class), 60-second demotions after failures, the
//! last success per assignment, and a rotation counter. Everything here is
//! advisory state that a restart may forget; lifecycle states that must
//! survive (reauthorization needed, refresh failures) live in the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Consecutive failures that open a circuit.
pub const CIRCUIT_FAILURE_THRESHOLD: u32 = 3;
/// Seconds a circuit stays open before one probe is let through.
pub const CIRCUIT_OPEN_SECS: i64 = 60;
/// Seconds an assignment is moved to the back of the ring after a failure.
pub const DEMOTION_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Circuit {
    consecutive_failures: u32,
    open_until: Option<i64>,
    /// When the half-open probe was claimed; a claim older than the open
    /// period is considered lost (its request never reported back).
    probe_claimed_at: Option<i64>,
}

/// What the breaker says about a candidate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    /// Open, but the waiting time is over: one probe may go.
    HalfOpen,
    Open,
}

type CircuitKey = (String, String, &'static str);

/// Health state shared by every request of this instance.
#[derive(Debug, Default)]
pub struct Health {
    circuits: Mutex<HashMap<CircuitKey, Circuit>>,
    demoted_until: Mutex<HashMap<String, i64>>,
    last_success: Mutex<HashMap<String, i64>>,
    rotation: AtomicU64,
}

impl Health {
    /// The breaker state of (assignment, model, route class) at `now`.
    pub fn circuit(
        &self,
        assignment: &str,
        model: &str,
        route_class: &'static str,
        now: i64,
    ) -> CircuitState {
        let Ok(map) = self.circuits.lock() else {
            return CircuitState::Closed;
        };
        match map.get(&(assignment.to_owned(), model.to_owned(), route_class)) {
            Some(Circuit {
                open_until: Some(until),
                probe_claimed_at,
                ..
            }) => {
                let probing = probe_claimed_at.is_some_and(|at| now - at < CIRCUIT_OPEN_SECS);
                if now < *until || probing {
                    CircuitState::Open
                } else {
                    CircuitState::HalfOpen
                }
            }
            _ => CircuitState::Closed,
        }
    }

    /// Claims the single half-open probe; false when another request has it.
    pub fn claim_probe(
        &self,
        assignment: &str,
        model: &str,
        route_class: &'static str,
        now: i64,
    ) -> bool {
        let Ok(mut map) = self.circuits.lock() else {
            return false;
        };
        let c = map
            .entry((assignment.to_owned(), model.to_owned(), route_class))
            .or_default();
        if c.probe_claimed_at
            .is_some_and(|at| now - at < CIRCUIT_OPEN_SECS)
        {
            return false;
        }
        c.probe_claimed_at = Some(now);
        true
    }

    /// Records the outcome of an attempt.
    pub fn record(
        &self,
        assignment: &str,
        model: &str,
        route_class: &'static str,
        success: bool,
        now: i64,
    ) {
        if let Ok(mut map) = self.circuits.lock() {
            let key = (assignment.to_owned(), model.to_owned(), route_class);
            if success {
                map.remove(&key);
            } else {
                let c = map.entry(key).or_default();
                c.consecutive_failures += 1;
                let was_probe = c.probe_claimed_at.take().is_some();
                if c.consecutive_failures >= CIRCUIT_FAILURE_THRESHOLD || was_probe {
                    c.open_until = Some(now + CIRCUIT_OPEN_SECS);
                    metrics::counter!("codex_pooler_routing_circuit_transitions_total", "transition" => "open", "route_class" => route_class)
                        .increment(1);
                }
            }
        }
        if success {
            if let Ok(mut m) = self.last_success.lock() {
                m.insert(assignment.to_owned(), now);
            }
            if let Ok(mut m) = self.demoted_until.lock() {
                m.remove(assignment);
            }
        } else if let Ok(mut m) = self.demoted_until.lock() {
            m.insert(assignment.to_owned(), now + DEMOTION_SECS);
        }
    }

    /// The open circuits of an assignment at `now`: (model, route class,
    /// seconds until a probe may go), for the console's readiness column.
    pub fn open_circuits(&self, assignment: &str, now: i64) -> Vec<(String, &'static str, i64)> {
        let Ok(map) = self.circuits.lock() else {
            return Vec::new();
        };
        let mut open: Vec<(String, &'static str, i64)> = map
            .iter()
            .filter(|((a, _, _), _)| a == assignment)
            .filter_map(|((_, model, class), c)| {
                c.open_until
                    .map(|until| (model.clone(), *class, (until - now).max(0)))
            })
            .collect();
        open.sort();
        open
    }

    /// Whether the assignment is demoted at `now`.
    pub fn is_demoted(&self, assignment: &str, now: i64) -> bool {
        self.demoted_until
            .lock()
            .ok()
            .and_then(|m| m.get(assignment).copied())
            .is_some_and(|until| until > now)
    }

    /// When the assignment last succeeded (unix seconds), if ever.
    pub fn last_success(&self, assignment: &str) -> Option<i64> {
        self.last_success
            .lock()
            .ok()
            .and_then(|m| m.get(assignment).copied())
    }

    /// The next value of the Pool-wide rotation counter.
    pub fn next_rotation(&self) -> u64 {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }
}

/// Failed sign-ins per (email, client address) in a fixed 15-minute window,
/// kept in memory per instance: after [`SIGN_IN_FAILURE_LIMIT`] failures the
/// password step is refused until the window ends, even with the right
/// password. Bounded: when it holds too many keys, ended windows are dropped
/// first, then everything.
#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

pub const SIGN_IN_FAILURE_LIMIT: u32 = 10;
pub const SIGN_IN_WINDOW_SECS: i64 = 15 * 60;
const SIGN_IN_MAX_KEYS: usize = 10_000;

impl SignInThrottle {
    /// Seconds until `key` may try again, when it is blocked at `now`.
    pub fn blocked_for(&self, key: &str, now: i64) -> Option<i64> {
        let map = self.failures.lock().ok()?;
        let (count, start) = *map.get(key)?;
        let ends = start + SIGN_IN_WINDOW_SECS;
        (count >= SIGN_IN_FAILURE_LIMIT && now < ends).then_some(ends - now)
    }

    /// Counts a failed sign-in of `key` at `now`.
    pub fn fail(&self, key: &str, now: i64) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= SIGN_IN_MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, (_, start)| now < *start + SIGN_IN_WINDOW_SECS);
            if map.len() >= SIGN_IN_MAX_KEYS {
                map.clear();
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((0, now));
        if now >= entry.1 + SIGN_IN_WINDOW_SECS {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Forgets `key` after a successful sign-in.
    pub fn succeed(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_throttle_blocks_after_the_limit_until_the_window_ends() {
        let t = SignInThrottle::default();
        for _ in 0..SIGN_IN_FAILURE_LIMIT - 1 {
            t.fail("a|ip", 100);
        }
        assert_eq!(t.blocked_for("a|ip", 100), None);
        t.fail("a|ip", 100);
        assert_eq!(t.blocked_for("a|ip", 160), Some(SIGN_IN_WINDOW_SECS - 60));
        assert_eq!(t.blocked_for("b|ip", 160), None, "per key");
        assert_eq!(t.blocked_for("a|ip", 100 + SIGN_IN_WINDOW_SECS), None);
        t.fail("a|ip", 100 + SIGN_IN_WINDOW_SECS);
        assert_eq!(
            t.blocked_for("a|ip", 100 + SIGN_IN_WINDOW_SECS),
            None,
            "a new window"
        );
        t.succeed("a|ip");
        assert_eq!(t.blocked_for("a|ip", 100), None);
    }

    #[test]
    fn the_circuit_opens_after_three_failures_and_lets_one_probe_through_after_sixty_seconds() {
        let h = Health::default();
        for _ in 0..2 {
            h.record("a", "m", "proxy_stream", false, 0);
        }
        assert_eq!(h.circuit("a", "m", "proxy_stream", 0), CircuitState::Closed);
        h.record("a", "m", "proxy_stream", false, 0);
        assert_eq!(h.circuit("a", "m", "proxy_stream", 59), CircuitState::Open);
        assert_eq!(
            h.circuit("a", "other-model", "proxy_stream", 59),
            CircuitState::Closed
        );
        assert_eq!(
            h.circuit("a", "m", "proxy_stream", 60),
            CircuitState::HalfOpen
        );
        assert!(h.claim_probe("a", "m", "proxy_stream", 60));
        assert!(!h.claim_probe("a", "m", "proxy_stream", 60));
        assert_eq!(h.circuit("a", "m", "proxy_stream", 61), CircuitState::Open);
        h.record("a", "m", "proxy_stream", false, 61);
        assert_eq!(
            h.circuit("a", "m", "proxy_stream", 120),
            CircuitState::Open,
            "a failed probe reopens"
        );
        assert_eq!(
            h.circuit("a", "m", "proxy_stream", 121),
            CircuitState::HalfOpen
        );
        assert!(h.claim_probe("a", "m", "proxy_stream", 121));
        h.record("a", "m", "proxy_stream", true, 121);
        assert_eq!(
            h.circuit("a", "m", "proxy_stream", 121),
            CircuitState::Closed
        );
    }

    #[test]
    fn failures_demote_and_successes_restore() {
        let h = Health::default();
        h.record("a", "m", "proxy_http", false, 100);
        assert!(h.is_demoted("a", 159));
        assert!(!h.is_demoted("a", 160));
        h.record("a", "m", "proxy_http", true, 120);
        assert!(!h.is_demoted("a", 130));
        assert_eq!(h.last_success("a"), Some(120));
    }
}
