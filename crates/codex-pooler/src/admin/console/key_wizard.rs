//! The API key create wizard: basics, models, enforcement, limits, review.
//! The steps are plain GET forms that carry every answer so far as hidden
//! fields (nothing is stored until the review step's POST), so the wizard
//! works without JavaScript and a reload never loses answers. The rules for
//! a key's fields live here ([`KeyDraft::to_spec`], [`validate_spec`]) and
//! serve the JSON twin too.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::ConsoleError;
use super::actions::visible_pool;
use super::session::{Operator, PageOperator};
use super::views::{Chrome, render};
use crate::control::KeySpec;
use crate::domain::policy::EFFORTS;
use crate::runtime::Runtime;
use crate::store::{KeyPolicy, PoolRow};

/// The wizard's steps, in order.
pub const STEPS: &[(&str, &str)] = &[
    ("basics", "Basics"),
    ("models", "Models"),
    ("enforcement", "Enforcement"),
    ("limits", "Limits"),
    ("review", "Review"),
];

/// Service tiers a key may enforce.
pub const SERVICE_TIERS: &[&str] = &["auto", "default", "flex", "priority"];

const MAX_MODELS: usize = 100;
const MAX_LIMIT: i64 = 1_000_000_000_000;
/// Largest spend limit: one million US dollars.
const MAX_SPEND_MICROS: i64 = 1_000_000 * 1_000_000;

fn step_index(step: &str) -> usize {
    STEPS.iter().position(|(s, _)| *s == step).unwrap_or(0)
}

/// The answers as submitted (text), from the wizard's forms or the final POST.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct KeyDraft {
    pub name: String,
    pub expires_in_days: String,
    /// Model slugs, one per line or separated by commas.
    pub allowed_models: String,
    pub enforced_model: String,
    /// empty, `enforce` (always use the effort) or `maximum` (allow up to it).
    pub reasoning_mode: String,
    pub reasoning_effort: String,
    pub service_tier: String,
    pub max_requests_per_minute: String,
    pub max_tokens_per_day: String,
    pub max_tokens_per_week: String,
    pub max_input_tokens_per_request: String,
    pub max_output_tokens_per_request: String,
    pub max_spend_usd_per_day: String,
    pub max_spend_usd_per_week: String,
    pub max_spend_usd_per_month: String,
}

/// A refused answer: the step to show again and why.
#[derive(Debug, Clone)]
pub struct DraftError {
    pub step: &'static str,
    pub message: String,
}

fn refuse(step: &'static str, message: impl Into<String>) -> DraftError {
    DraftError {
        step,
        message: message.into(),
    }
}

/// "7,000" or "7000" (commas only as thousands separators, so "1,5" is
/// refused rather than read as 15).
fn digits_of(text: &str) -> Option<String> {
    let text = text.trim().replace('_', "");
    let mut groups = text.split(',');
    let first = groups.next()?;
    let rest: Vec<&str> = groups.collect();
    if !rest.is_empty()
        && (first.is_empty() || first.len() > 3 || rest.iter().any(|g| g.len() != 3))
    {
        return None;
    }
    Some(text.replace(',', ""))
}

fn opt_count(step: &'static str, what: &str, text: &str) -> Result<Option<i64>, DraftError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let text = digits_of(text).unwrap_or_else(|| "invalid".into());
    match text.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(refuse(
            step,
            format!("{what} must be a whole number from 1 to {MAX_LIMIT}, or empty for no limit"),
        )),
    }
}

/// "12.5" US dollars as micro-dollars; at least one cent.
fn opt_usd(what: &str, text: &str) -> Result<Option<i64>, DraftError> {
    let text = text.trim().trim_start_matches('$').trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || {
        refuse(
            "limits",
            format!(
                "{what} must be an amount in US dollars such as 25 or 12.50, or empty for no limit"
            ),
        )
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 6
        || whole.len() > 9
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    let micros = whole * 1_000_000 + frac_micros;
    if micros > MAX_SPEND_MICROS {
        return Err(refuse(
            "limits",
            format!("{what} must be at most $1,000,000"),
        ));
    }
    if micros < 10_000 {
        return Err(refuse("limits", format!("{what} must be at least $0.01")));
    }
    Ok(Some(micros))
}

fn valid_model_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 200
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'))
}

impl KeyDraft {
    /// The model list as typed, cleaned and de-duplicated in order.
    pub fn model_list(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in self
            .allowed_models
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            if !out.iter().any(|o| o == m) {
                out.push(m.to_owned());
            }
        }
        out
    }

    /// Checks the answers of steps before `upto` (exclusive) and, when
    /// `upto` is past the last step, all of them; returns the key they
    /// describe or the first refused answer.
    pub fn to_spec(&self, now_ms: i64, upto: usize) -> Result<KeySpec, DraftError> {
        // Basics.
        let mut spec = KeySpec {
            name: self.name.trim().to_owned(),
            ..KeySpec::default()
        };
        if upto > 0 {
            if spec.name.is_empty() || spec.name.chars().count() > 120 {
                return Err(refuse("basics", "name must be 1-120 characters"));
            }
            spec.expires_at = match self.expires_in_days.trim() {
                "" => None,
                days => match days.parse::<i64>() {
                    Ok(d) if (1..=3650).contains(&d) => Some(now_ms + d * 86_400_000),
                    _ => {
                        return Err(refuse(
                            "basics",
                            "expiry must be a whole number of days from 1 to 3650, or empty for a key that does not expire",
                        ));
                    }
                },
            };
        }
        // Models.
        if upto > 1 {
            let models = self.model_list();
            if let Some(bad) = models.iter().find(|m| !valid_model_slug(m)) {
                return Err(refuse(
                    "models",
                    format!("\"{bad}\" is not a model slug (letters, digits, . - _ : / only)"),
                ));
            }
            if models.len() > MAX_MODELS {
                return Err(refuse(
                    "models",
                    format!("at most {MAX_MODELS} allowed models"),
                ));
            }
            let enforced = self.enforced_model.trim();
            if !enforced.is_empty() {
                if !valid_model_slug(enforced) {
                    return Err(refuse(
                        "models",
                        format!("\"{enforced}\" is not a model slug"),
                    ));
                }
                if !models.is_empty() && !models.iter().any(|m| m == enforced) {
                    return Err(refuse(
                        "models",
                        "the enforced model must be one of the allowed models (or leave the allowed list empty)",
                    ));
                }
                spec.enforced_model = Some(enforced.to_owned());
            }
            spec.allowed_models = (!models.is_empty()).then_some(models);
        }
        // Enforcement.
        if upto > 2 {
            let effort = self.reasoning_effort.trim();
            match self.reasoning_mode.trim() {
                "" => {}
                mode @ ("enforce" | "maximum") => {
                    if !EFFORTS.contains(&effort) {
                        return Err(refuse(
                            "enforcement",
                            format!("choose a reasoning effort ({})", EFFORTS.join(", ")),
                        ));
                    }
                    if mode == "enforce" {
                        spec.policy.enforced_reasoning_effort = Some(effort.to_owned());
                    } else {
                        spec.policy.maximum_reasoning_effort = Some(effort.to_owned());
                    }
                }
                _ => {
                    return Err(refuse(
                        "enforcement",
                        "reasoning mode must be none, enforce or maximum",
                    ));
                }
            }
            match self.service_tier.trim() {
                "" => {}
                tier if SERVICE_TIERS.contains(&tier) => {
                    spec.policy.enforced_service_tier = Some(tier.to_owned());
                }
                _ => {
                    return Err(refuse(
                        "enforcement",
                        format!("service tier must be one of {}", SERVICE_TIERS.join(", ")),
                    ));
                }
            }
        }
        // Limits.
        if upto > 3 {
            let p = &mut spec.policy;
            p.max_requests_per_minute = opt_count(
                "limits",
                "requests per minute",
                &self.max_requests_per_minute,
            )?;
            p.max_tokens_per_day = opt_count("limits", "tokens per day", &self.max_tokens_per_day)?;
            p.max_tokens_per_week =
                opt_count("limits", "tokens per week", &self.max_tokens_per_week)?;
            p.max_input_tokens_per_request = opt_count(
                "limits",
                "input tokens per request",
                &self.max_input_tokens_per_request,
            )?;
            p.max_output_tokens_per_request = opt_count(
                "limits",
                "output tokens per request",
                &self.max_output_tokens_per_request,
            )?;
            p.max_spend_micros_per_day = opt_usd("spend per day", &self.max_spend_usd_per_day)?;
            p.max_spend_micros_per_week = opt_usd("spend per week", &self.max_spend_usd_per_week)?;
            p.max_spend_micros_per_month =
                opt_usd("spend per month", &self.max_spend_usd_per_month)?;
            validate_spec(&spec).map_err(|e| refuse("limits", e))?;
        }
        Ok(spec)
    }
}

/// A key as the JSON twin describes it (expiry in days, policy as stored);
/// [`validate_spec`] then applies the same rules as the wizard.
pub fn spec_from_api(
    name: String,
    expires_in_days: Option<i64>,
    allowed_models: Option<Vec<String>>,
    enforced_model: Option<String>,
    policy: KeyPolicy,
    now_ms: i64,
) -> Result<KeySpec, ConsoleError> {
    let expires_at = match expires_in_days {
        None => None,
        Some(d) if (1..=3650).contains(&d) => Some(now_ms + d * 86_400_000),
        Some(_) => {
            return Err(ConsoleError::Invalid(
                "expires_in_days must be from 1 to 3650".into(),
            ));
        }
    };
    Ok(KeySpec {
        name,
        allowed_models: allowed_models.filter(|m| !m.is_empty()),
        enforced_model: enforced_model.filter(|m| !m.is_empty()),
        expires_at,
        policy,
    })
}

/// The rules every new key obeys, whichever form it came from.
pub fn validate_spec(spec: &KeySpec) -> Result<(), String> {
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > 120 {
        return Err("name must be 1-120 characters".into());
    }
    let models = spec.allowed_models.as_deref().unwrap_or(&[]);
    if models.len() > MAX_MODELS {
        return Err(format!("at most {MAX_MODELS} allowed models"));
    }
    if let Some(bad) = models.iter().find(|m| !valid_model_slug(m)) {
        return Err(format!("\"{bad}\" is not a model slug"));
    }
    if let Some(m) = &spec.enforced_model {
        if !valid_model_slug(m) {
            return Err(format!("\"{m}\" is not a model slug"));
        }
        if !models.is_empty() && !models.contains(m) {
            return Err("the enforced model must be one of the allowed models".into());
        }
    }
    let p: &KeyPolicy = &spec.policy;
    if p.enforced_reasoning_effort.is_some() && p.maximum_reasoning_effort.is_some() {
        return Err("set either an enforced or a maximum reasoning effort, not both".into());
    }
    for effort in [&p.enforced_reasoning_effort, &p.maximum_reasoning_effort]
        .into_iter()
        .flatten()
    {
        if !EFFORTS.contains(&effort.as_str()) {
            return Err(format!(
                "reasoning effort must be one of {}",
                EFFORTS.join(", ")
            ));
        }
    }
    if let Some(tier) = &p.enforced_service_tier
        && !SERVICE_TIERS.contains(&tier.as_str())
    {
        return Err(format!(
            "service tier must be one of {}",
            SERVICE_TIERS.join(", ")
        ));
    }
    for (what, v) in [
        ("max_requests_per_minute", p.max_requests_per_minute),
        ("max_tokens_per_day", p.max_tokens_per_day),
        ("max_tokens_per_week", p.max_tokens_per_week),
        (
            "max_input_tokens_per_request",
            p.max_input_tokens_per_request,
        ),
        (
            "max_output_tokens_per_request",
            p.max_output_tokens_per_request,
        ),
        ("max_spend_micros_per_day", p.max_spend_micros_per_day),
        ("max_spend_micros_per_week", p.max_spend_micros_per_week),
        ("max_spend_micros_per_month", p.max_spend_micros_per_month),
    ] {
        if let Some(v) = v
            && !(1..=MAX_LIMIT).contains(&v)
        {
            return Err(format!("{what} must be from 1 to {MAX_LIMIT}"));
        }
    }
    if let (Some(day), Some(week)) = (p.max_tokens_per_day, p.max_tokens_per_week)
        && week < day
    {
        return Err("tokens per week cannot be lower than tokens per day".into());
    }
    Ok(())
}

/// One line of the review step.
#[derive(Debug, Clone)]
pub struct ReviewLine {
    pub label: &'static str,
    pub value: String,
}

fn usd(micros: i64) -> String {
    format!(
        "${}.{:02}",
        micros / 1_000_000,
        (micros % 1_000_000) / 10_000
    )
}

fn review_lines(spec: &KeySpec, draft: &KeyDraft) -> Vec<ReviewLine> {
    let p = &spec.policy;
    let none = |v: Option<String>, empty: &str| v.unwrap_or_else(|| empty.to_owned());
    let n = |v: Option<i64>| v.map(|n| n.to_string());
    vec![
        ReviewLine {
            label: "Name",
            value: spec.name.clone(),
        },
        ReviewLine {
            label: "Expires",
            value: match draft.expires_in_days.trim() {
                "" => "never".into(),
                d => format!("in {d} days"),
            },
        },
        ReviewLine {
            label: "Allowed models",
            value: none(
                spec.allowed_models.as_ref().map(|m| m.join(", ")),
                "every model of the Pool",
            ),
        },
        ReviewLine {
            label: "Enforced model",
            value: none(spec.enforced_model.clone(), "as requested"),
        },
        ReviewLine {
            label: "Reasoning effort",
            value: match (&p.enforced_reasoning_effort, &p.maximum_reasoning_effort) {
                (Some(e), _) => format!("always {e}"),
                (_, Some(m)) => format!("up to {m} (higher is refused)"),
                _ => "as requested".into(),
            },
        },
        ReviewLine {
            label: "Service tier",
            value: none(
                p.enforced_service_tier
                    .as_ref()
                    .map(|t| format!("always {t}")),
                "as requested",
            ),
        },
        ReviewLine {
            label: "Requests per minute",
            value: none(n(p.max_requests_per_minute), "no limit"),
        },
        ReviewLine {
            label: "Tokens per day / week",
            value: format!(
                "{} / {}",
                none(n(p.max_tokens_per_day), "no limit"),
                none(n(p.max_tokens_per_week), "no limit")
            ),
        },
        ReviewLine {
            label: "Input / output tokens per request",
            value: format!(
                "{} / {}",
                none(n(p.max_input_tokens_per_request), "no limit"),
                none(n(p.max_output_tokens_per_request), "no limit")
            ),
        },
        ReviewLine {
            label: "Spend per day / week / month",
            value: format!(
                "{} / {} / {}",
                none(p.max_spend_micros_per_day.map(usd), "no limit"),
                none(p.max_spend_micros_per_week.map(usd), "no limit"),
                none(p.max_spend_micros_per_month.map(usd), "no limit")
            ),
        },
    ]
}

/// The answers that are not on the current step, as hidden fields.
fn hidden_fields(draft: &KeyDraft, step: &str) -> Vec<(&'static str, String)> {
    let d = draft.clone();
    let all: Vec<(&'static str, &'static str, String)> = vec![
        ("basics", "name", d.name),
        ("basics", "expires_in_days", d.expires_in_days),
        ("models", "allowed_models", d.allowed_models),
        ("models", "enforced_model", d.enforced_model),
        ("enforcement", "reasoning_mode", d.reasoning_mode),
        ("enforcement", "reasoning_effort", d.reasoning_effort),
        ("enforcement", "service_tier", d.service_tier),
        (
            "limits",
            "max_requests_per_minute",
            d.max_requests_per_minute,
        ),
        ("limits", "max_tokens_per_day", d.max_tokens_per_day),
        ("limits", "max_tokens_per_week", d.max_tokens_per_week),
        (
            "limits",
            "max_input_tokens_per_request",
            d.max_input_tokens_per_request,
        ),
        (
            "limits",
            "max_output_tokens_per_request",
            d.max_output_tokens_per_request,
        ),
        ("limits", "max_spend_usd_per_day", d.max_spend_usd_per_day),
        ("limits", "max_spend_usd_per_week", d.max_spend_usd_per_week),
        (
            "limits",
            "max_spend_usd_per_month",
            d.max_spend_usd_per_month,
        ),
    ];
    all.into_iter()
        .filter(|(s, _, v)| *s != step && !v.is_empty())
        .map(|(_, name, v)| (name, v))
        .collect()
}

#[derive(Template)]
#[template(path = "key_wizard.html")]
pub struct KeyWizardPage {
    pub chrome: Chrome,
    pub pool: PoolRow,
    pub step: &'static str,
    pub step_no: usize,
    pub steps: Vec<(&'static str, &'static str)>,
    pub draft: KeyDraft,
    pub hidden: Vec<(&'static str, String)>,
    pub catalog: Vec<String>,
    pub efforts: Vec<&'static str>,
    pub tiers: Vec<&'static str>,
    pub review: Vec<ReviewLine>,
    pub error: Option<String>,
}

impl KeyWizardPage {
    pub fn prev_step(&self) -> &'static str {
        STEPS[self.step_no.saturating_sub(1)].0
    }
    pub fn next_step(&self) -> &'static str {
        STEPS[(self.step_no + 1).min(STEPS.len() - 1)].0
    }
}

/// Wizard query: the answers plus the step asked for (`go`).
#[derive(Debug, Deserialize)]
pub struct WizardQuery {
    #[serde(default)]
    go: String,
    #[serde(flatten)]
    draft: KeyDraft,
}

/// Renders the wizard at the step asked for, or at the first step whose
/// answers are refused (with the reason).
pub async fn render_wizard(
    rt: &Runtime,
    op: &Operator,
    pool_id: &str,
    draft: KeyDraft,
    wanted: &str,
    error: Option<DraftError>,
) -> Result<Response, ConsoleError> {
    let pool = visible_pool(rt, op, pool_id).await?;
    if pool.status == "archived" {
        return Err(ConsoleError::Conflict(
            "this Pool is archived: it takes no new accounts or keys".into(),
        ));
    }
    let now = crate::time::now_ms();
    let mut step_no = step_index(wanted);
    let mut message = error.as_ref().map(|e| e.message.clone());
    if let Some(e) = &error {
        step_no = step_index(e.step);
    } else if let Err(e) = draft.to_spec(now, step_no) {
        step_no = step_index(e.step);
        message = Some(e.message);
    }
    let step = STEPS[step_no].0;
    let review = if step == "review" {
        match draft.to_spec(now, STEPS.len()) {
            Ok(spec) => review_lines(&spec, &draft),
            Err(e) => {
                return Box::pin(render_wizard(rt, op, pool_id, draft, e.step, Some(e))).await;
            }
        }
    } else {
        Vec::new()
    };
    let catalog = rt
        .store
        .list_pool_models(&pool.id)
        .await?
        .into_iter()
        .map(|m| m.slug)
        .collect();
    let status = if message.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(
        &KeyWizardPage {
            chrome: Chrome::for_operator(op, "pools"),
            hidden: hidden_fields(&draft, step),
            pool,
            step,
            step_no,
            steps: STEPS.to_vec(),
            draft,
            catalog,
            efforts: EFFORTS.to_vec(),
            tiers: SERVICE_TIERS.to_vec(),
            review,
            error: message,
        },
        status,
    ))
}

pub async fn wizard(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Path(pool_id): Path<String>,
    Query(q): Query<WizardQuery>,
) -> Result<Response, ConsoleError> {
    let wanted = if q.go.is_empty() { "basics" } else { &q.go };
    render_wizard(&rt, &op, &pool_id, q.draft.clone(), wanted, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_become_micros_and_bad_amounts_are_named() {
        assert_eq!(opt_usd("x", "12.5").unwrap(), Some(12_500_000));
        assert_eq!(opt_usd("x", "$0.01").unwrap(), Some(10_000));
        assert_eq!(opt_usd("x", "").unwrap(), None);
        assert!(opt_usd("spend per day", "0.001").is_err());
        assert!(opt_usd("spend per day", "1,5").is_err());
        assert!(opt_usd("spend per day", "-3").is_err());
        assert!(opt_usd("spend per day", ".").is_err());
        assert!(
            opt_usd("spend per day", "1000000.01")
                .unwrap_err()
                .message
                .contains("at most $1,000,000")
        );
        assert_eq!(opt_count("limits", "x", "7,000").unwrap(), Some(7000));
        assert_eq!(opt_count("limits", "x", "1_000").unwrap(), Some(1000));
        assert!(opt_count("limits", "x", "1,5").is_err());
        assert!(opt_count("limits", "x", "12,34,567").is_err());
    }

    #[test]
    fn each_step_refuses_its_own_mistakes() {
        let mut d = KeyDraft {
            name: "ci".into(),
            ..KeyDraft::default()
        };
        assert!(d.to_spec(0, STEPS.len()).is_ok());
        d.expires_in_days = "0".into();
        assert_eq!(d.to_spec(0, 5).unwrap_err().step, "basics");
        d.expires_in_days = "30".into();
        assert_eq!(d.to_spec(0, 5).unwrap().expires_at, Some(30 * 86_400_000));
        d.allowed_models = "gpt-5.2, gpt-5.2-codex\ngpt-5.2".into();
        d.enforced_model = "o3".into();
        assert_eq!(d.to_spec(0, 5).unwrap_err().step, "models");
        d.enforced_model = "gpt-5.2-codex".into();
        let spec = d.to_spec(0, 5).unwrap();
        assert_eq!(
            spec.allowed_models,
            Some(vec!["gpt-5.2".to_owned(), "gpt-5.2-codex".to_owned()])
        );
        d.reasoning_mode = "maximum".into();
        d.reasoning_effort = "huge".into();
        assert_eq!(d.to_spec(0, 5).unwrap_err().step, "enforcement");
        d.reasoning_effort = "high".into();
        d.max_tokens_per_day = "1000".into();
        d.max_tokens_per_week = "10".into();
        assert_eq!(d.to_spec(0, 5).unwrap_err().step, "limits");
        d.max_tokens_per_week = "7,000".into();
        d.max_spend_usd_per_month = "25".into();
        let spec = d.to_spec(0, 5).unwrap();
        assert_eq!(
            spec.policy.maximum_reasoning_effort.as_deref(),
            Some("high")
        );
        assert_eq!(spec.policy.max_tokens_per_week, Some(7000));
        assert_eq!(spec.policy.max_spend_micros_per_month, Some(25_000_000));
        // Steps not reached yet are not judged.
        d.max_requests_per_minute = "lots".into();
        assert!(d.to_spec(0, 3).is_ok());
        assert_eq!(d.to_spec(0, 4).unwrap_err().step, "limits");
    }
}
