//! API key policy rules that need no I/O: reasoning-effort modes, service-tier
//! enforcement, request token estimates and per-request caps, and the wording
//! of a tripped limit.

/// Reasoning effort vocabulary, lowest to highest.
pub const EFFORTS: &[&str] = &[
    "none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra",
];

/// Output tokens assumed when a request sets no cap.
pub const DEFAULT_OUTPUT_ESTIMATE: i64 = 512;

fn rank(effort: &str) -> Option<usize> {
    EFFORTS.iter().position(|e| *e == effort)
}

/// What the key's reasoning policy decides for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffortDecision {
    /// Leave the request as it is.
    Keep,
    /// Send this effort upstream.
    Set(String),
    /// Refuse: the requested effort is above the ceiling or unknown.
    Refuse(String),
}

/// Applies "always use" (`enforced`) or "allow up to" (`maximum`) to the
/// requested effort. Never clamps silently: above the ceiling is refused.
pub fn decide_effort(
    requested: Option<&str>,
    enforced: Option<&str>,
    maximum: Option<&str>,
) -> EffortDecision {
    if let Some(e) = enforced {
        return EffortDecision::Set(e.to_owned());
    }
    let Some(max) = maximum.and_then(rank) else {
        return EffortDecision::Keep;
    };
    match requested {
        None => {
            // Omitted: the usual default if the ceiling allows it, else the ceiling.
            let default = rank("medium").unwrap_or(3);
            EffortDecision::Set(EFFORTS[default.min(max)].to_owned())
        }
        Some(r) => match rank(r) {
            Some(x) if x <= max => EffortDecision::Keep,
            Some(_) => EffortDecision::Refuse(r.to_owned()),
            None => EffortDecision::Refuse("unknown".to_owned()),
        },
    }
}

/// Estimated input tokens of a request body: ⌈bytes / 4⌉.
pub fn estimate_input_tokens(body_bytes: usize) -> i64 {
    (body_bytes as i64 + 3) / 4
}

/// Estimated output tokens: the request's own cap, else the policy cap, else a default.
pub fn estimate_output_tokens(requested_cap: Option<i64>, policy_cap: Option<i64>) -> i64 {
    requested_cap
        .or(policy_cap)
        .unwrap_or(DEFAULT_OUTPUT_ESTIMATE)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_use_sets_the_effort() {
        assert_eq!(
            decide_effort(Some("low"), Some("high"), None),
            EffortDecision::Set("high".into())
        );
        assert_eq!(
            decide_effort(None, Some("high"), None),
            EffortDecision::Set("high".into())
        );
    }

    #[test]
    fn allow_up_to_refuses_above_the_ceiling_and_unknown_values() {
        assert_eq!(
            decide_effort(Some("low"), None, Some("medium")),
            EffortDecision::Keep
        );
        assert_eq!(
            decide_effort(Some("medium"), None, Some("medium")),
            EffortDecision::Keep
        );
        assert_eq!(
            decide_effort(Some("high"), None, Some("medium")),
            EffortDecision::Refuse("high".into())
        );
        assert_eq!(
            decide_effort(Some("turbo"), None, Some("medium")),
            EffortDecision::Refuse("unknown".into())
        );
        assert_eq!(
            decide_effort(None, None, Some("low")),
            EffortDecision::Set("low".into())
        );
        assert_eq!(
            decide_effort(None, None, Some("xhigh")),
            EffortDecision::Set("medium".into())
        );
    }

    #[test]
    fn no_policy_keeps_the_request() {
        assert_eq!(
            decide_effort(Some("ultra"), None, None),
            EffortDecision::Keep
        );
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate_input_tokens(0), 0);
        assert_eq!(estimate_input_tokens(5), 2);
        assert_eq!(estimate_output_tokens(Some(100), Some(50)), 100);
        assert_eq!(estimate_output_tokens(None, Some(50)), 50);
        assert_eq!(estimate_output_tokens(None, None), 512);
    }
}
