//! Page models for the askama templates in `templates/`, and the small
//! formatting helpers that turn store rows into display text (times in UTC,
//! percentages), so the templates stay free of logic.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::actions::PoolHealth;
use super::session::Operator;
use crate::store::{
    ApiKeySummary, AuditEventRow, OperatorSessionRow, OperatorSummary, OperatorTokenSummary,
    PoolOverview, PoolRoutingSettings, PoolRow, PoolUpstream, QuotaWindowRow,
};

/// What the layout needs: who is signed in, their CSRF token, the section.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub signed_in: bool,
    pub email: String,
    pub role: String,
    pub owner: bool,
    pub csrf: String,
    pub section: &'static str,
}

impl Chrome {
    pub fn signed_out() -> Self {
        Self::default()
    }

    pub fn for_operator(op: &Operator, section: &'static str) -> Self {
        Chrome {
            signed_in: true,
            email: op.email.clone(),
            role: op.role.clone(),
            owner: op.is_owner(),
            csrf: op.csrf.clone(),
            section,
        }
    }
}

/// Renders a page with a status; a template error becomes a plain 500.
pub fn render<T: Template>(page: &T, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "internal error",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub email: String,
    pub error: Option<String>,
    pub notice: Option<String>,
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage {
    pub chrome: Chrome,
    /// The operator signed in with a temporary password.
    pub required: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "bootstrap.html")]
pub struct BootstrapPage {
    pub chrome: Chrome,
    pub token: String,
    pub email: String,
    pub error: Option<String>,
    pub closed: bool,
}

/// One bar of a Pool's 24-hour traffic chart (SVG coordinates).
#[derive(Debug, Clone)]
pub struct TrafficBar {
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub failed_height: u32,
    pub title: String,
}

/// A row of the Pools list.
#[derive(Debug, Clone)]
pub struct PoolListRow {
    pub pool: PoolOverview,
    pub requests_5h: String,
    pub failed_5h: i64,
    pub tokens_5h: String,
    pub bars: Vec<TrafficBar>,
    pub requests_24h: i64,
}

/// Chart height in SVG units; bars are 4 wide with a gap of 1.
pub const CHART_HEIGHT: u32 = 24;

/// A count with thousands shortened (12.3k, 4.5M).
pub fn compact(n: i64) -> String {
    match n.abs() {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

impl From<&PoolHealth> for PoolListRow {
    fn from(h: &PoolHealth) -> Self {
        let peak = h
            .hourly
            .iter()
            .map(|t| t.requests)
            .max()
            .unwrap_or(0)
            .max(1);
        let scale = |v: i64| -> u32 {
            if v <= 0 {
                0
            } else {
                ((v * i64::from(CHART_HEIGHT) + peak - 1) / peak).clamp(1, i64::from(CHART_HEIGHT))
                    as u32
            }
        };
        let bars = h
            .hourly
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let height = scale(t.requests);
                TrafficBar {
                    x: i as u32 * 5,
                    y: CHART_HEIGHT - height,
                    height,
                    failed_height: scale(t.failed).min(height),
                    title: format!(
                        "{}: {} requests, {} failed, {} tokens",
                        crate::time::format_utc(t.hour_start, ' ', " UTC"),
                        t.requests,
                        t.failed,
                        t.tokens
                    ),
                }
            })
            .collect();
        PoolListRow {
            pool: h.pool.clone(),
            requests_5h: compact(h.requests_last_5h),
            failed_5h: h.failed_last_5h,
            tokens_5h: compact(h.tokens_last_5h),
            requests_24h: h.hourly.iter().map(|t| t.requests).sum(),
            bars,
        }
    }
}

#[derive(Template)]
#[template(path = "pools.html")]
pub struct PoolsPage {
    pub chrome: Chrome,
    pub pools: Vec<PoolListRow>,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub slug: String,
    pub name: String,
}

/// One quota window, formatted.
#[derive(Debug, Clone)]
pub struct QuotaView {
    pub kind: String,
    /// Used share, 0-100, rounded for the bar.
    pub used_percent: u32,
    pub used: String,
    /// Seconds until the window resets (by the gateway's clock), if known.
    pub resets_in_secs: Option<i64>,
    pub resets: String,
    pub observed: String,
    /// How long ago it was observed, e.g. "3m ago".
    pub freshness: String,
    /// Observed more than 15 minutes ago.
    pub stale: bool,
}

/// Whether the router would use an account now, and why not.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// `ready`, `cooling_down` or `excluded`.
    pub state: &'static str,
    pub reason: String,
    /// Seconds until a quota cool-down ends.
    pub cooling_secs: Option<i64>,
    /// Open circuit breakers: "gpt-5.5 (responses)" and seconds until a probe.
    pub circuits: Vec<(String, i64)>,
    /// Moved to the back of the ring after a recent failure.
    pub demoted: bool,
    /// "3m ago" since the last successful request on this instance.
    pub last_success: Option<String>,
}

/// A short "how long ago" text.
pub fn ago(ms: i64) -> String {
    let secs = (ms / 1000).max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// One upstream account row, formatted.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    pub identity_id: String,
    pub label: String,
    pub email: String,
    pub plan: String,
    pub status: String,
    pub paused: bool,
    pub readiness: Readiness,
    pub token_expires: String,
    pub last_refresh: String,
    pub error_code: String,
    pub quota: Vec<QuotaView>,
}

impl UpstreamView {
    /// `now_ms` is wall-clock time, `now_secs` the gateway's clock that
    /// quota resets are measured on.
    pub fn new(
        row: &PoolUpstream,
        windows: &[QuotaWindowRow],
        readiness: Readiness,
        now_ms: i64,
        now_secs: i64,
    ) -> Self {
        UpstreamView {
            identity_id: row.identity_id.clone(),
            label: row.label.clone(),
            email: row.email.clone().unwrap_or_default(),
            plan: row.plan_type.clone().unwrap_or_else(|| "unknown".into()),
            status: row.status.clone(),
            paused: row.status == "paused",
            readiness,
            token_expires: opt_time(row.access_token_expires_at),
            last_refresh: opt_time(row.last_refresh_at),
            error_code: row.last_refresh_error_code.clone().unwrap_or_default(),
            quota: windows
                .iter()
                .filter(|w| w.identity_id == row.identity_id)
                .map(|w| QuotaView {
                    kind: match w.window_minutes {
                        Some(300) => "5h".into(),
                        Some(10_080) => "weekly".into(),
                        Some(m) if m % 1440 == 0 => format!("{}d", m / 1440),
                        Some(m) if m % 60 == 0 => format!("{}h", m / 60),
                        _ => w.window_kind.clone(),
                    },
                    used_percent: w.used_percent.clamp(0.0, 100.0).round() as u32,
                    used: format!("{:.0}%", w.used_percent),
                    resets_in_secs: w.reset_at.map(|r| r.saturating_sub(now_secs).max(0)),
                    resets: opt_time(w.reset_at.map(|r| r.saturating_mul(1000))),
                    observed: format_time(w.observed_at),
                    freshness: ago(now_ms - w.observed_at),
                    stale: now_ms - w.observed_at > 15 * 60 * 1000,
                })
                .collect(),
        }
    }
}

/// One API key row, formatted.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub status: String,
    pub last_used: String,
    pub created: String,
    pub expires: String,
    /// The key's models, enforcement and limits in a few words ("" = none).
    pub policy: String,
}

/// A key's restrictions in a few words, e.g. "2 models · effort ≤ high ·
/// 60 req/min · $20.00/month".
pub fn policy_summary(k: &ApiKeySummary) -> String {
    let p = &k.policy;
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = &k.enforced_model {
        parts.push(format!("model {m}"));
    } else if let Some(list) = k
        .allowed_models
        .as_deref()
        .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
    {
        parts.push(match list.as_slice() {
            [one] => one.clone(),
            many => format!("{} models", many.len()),
        });
    }
    if let Some(e) = &p.enforced_reasoning_effort {
        parts.push(format!("effort {e}"));
    } else if let Some(e) = &p.maximum_reasoning_effort {
        parts.push(format!("effort ≤ {e}"));
    }
    if let Some(t) = &p.enforced_service_tier {
        parts.push(format!("tier {t}"));
    }
    let count = |v: Option<i64>, unit: &str| v.map(|n| format!("{} {unit}", compact(n)));
    let usd = |v: Option<i64>, unit: &str| {
        v.map(|m| format!("${}.{:02}/{unit}", m / 1_000_000, (m % 1_000_000) / 10_000))
    };
    parts.extend(
        [
            count(p.max_requests_per_minute, "req/min"),
            count(p.max_tokens_per_day, "tok/day"),
            count(p.max_tokens_per_week, "tok/week"),
            count(p.max_input_tokens_per_request, "in/req"),
            count(p.max_output_tokens_per_request, "out/req"),
            usd(p.max_spend_micros_per_day, "day"),
            usd(p.max_spend_micros_per_week, "week"),
            usd(p.max_spend_micros_per_month, "month"),
        ]
        .into_iter()
        .flatten(),
    );
    parts.join(" · ")
}

impl From<&ApiKeySummary> for KeyView {
    fn from(k: &ApiKeySummary) -> Self {
        KeyView {
            id: k.id.clone(),
            name: k.display_name.clone(),
            prefix: k.key_prefix.clone(),
            status: k.status.clone(),
            last_used: k
                .last_used_at
                .map(format_time)
                .unwrap_or_else(|| "never".into()),
            created: format_time(k.created_at),
            expires: k
                .expires_at
                .map(format_time)
                .unwrap_or_else(|| "never".into()),
            policy: policy_summary(k),
        }
    }
}

#[derive(Template)]
#[template(path = "pool.html")]
pub struct PoolPage {
    pub chrome: Chrome,
    pub pool: PoolRow,
    pub settings: PoolRoutingSettings,
    pub strategies: Vec<&'static str>,
    pub archived: bool,
    pub upstreams: Vec<UpstreamView>,
    pub keys: Vec<KeyView>,
    /// The default identity provider, for the device-code link form.
    pub auth_base_url: String,
    /// Accounts of the operator's other Pools that could be added here.
    pub assignable: Vec<crate::store::AssignableUpstream>,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub key_name: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "key_created.html")]
pub struct KeyCreatedPage {
    pub chrome: Chrome,
    pub pool: PoolRow,
    pub name: String,
    pub raw_key: String,
    /// `created` or `rotated`.
    pub verb: &'static str,
}

/// One operator row, formatted.
#[derive(Debug, Clone)]
pub struct OperatorView {
    pub id: String,
    pub email: String,
    pub role: String,
    pub status: String,
    pub active: bool,
    pub must_change_password: bool,
    pub totp_enabled: bool,
    pub pools: String,
    pub pool_ids: Vec<String>,
    pub created: String,
}

impl OperatorView {
    /// Whether the operator is assigned the Pool `id` (the Pools form ticks it).
    pub fn has_pool(&self, id: &str) -> bool {
        self.pool_ids.iter().any(|p| p == id)
    }
}

impl From<&OperatorSummary> for OperatorView {
    fn from(o: &OperatorSummary) -> Self {
        OperatorView {
            id: o.id.clone(),
            email: o.email.clone(),
            role: o.role.clone(),
            status: o.status.clone(),
            active: o.status == "active",
            must_change_password: o.must_change_password,
            totp_enabled: o.totp_enabled,
            pool_ids: o.pools.iter().map(|(id, _)| id.clone()).collect(),
            pools: if o.role == "owner" {
                "all Pools".into()
            } else if o.pools.is_empty() {
                "none".into()
            } else {
                o.pools
                    .iter()
                    .map(|(_, name)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            created: format_time(o.created_at),
        }
    }
}

/// A Pool offered in the new-operator form.
#[derive(Debug, Clone)]
pub struct PoolChoice {
    pub id: String,
    pub name: String,
    pub checked: bool,
}

#[derive(Template)]
#[template(path = "operators.html")]
pub struct OperatorsPage {
    pub chrome: Chrome,
    pub operators: Vec<OperatorView>,
    pub pools: Vec<PoolChoice>,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub email: String,
    pub admin_role: bool,
}

#[derive(Template)]
#[template(path = "operator_created.html")]
pub struct OperatorCreatedPage {
    pub chrome: Chrome,
    pub email: String,
    pub role: String,
    pub password: String,
}

/// One audit event, formatted.
#[derive(Debug, Clone)]
pub struct AuditView {
    pub id: String,
    pub time: String,
    pub actor: String,
    pub actor_kind: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub ip: String,
    pub details: String,
}

impl From<&AuditEventRow> for AuditView {
    fn from(e: &AuditEventRow) -> Self {
        AuditView {
            id: e.id.clone(),
            time: format_time(e.occurred_at),
            actor: e.actor_label.clone().unwrap_or_default(),
            actor_kind: e.actor_kind.clone(),
            action: e.action.clone(),
            target: match &e.target_id {
                Some(id) => format!("{} {id}", e.target_kind),
                None => e.target_kind.clone(),
            },
            outcome: e.outcome.clone(),
            ip: e.ip.clone().unwrap_or_default(),
            details: e.details.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub events: Vec<AuditView>,
    /// Pools in the operator's scope, for the Pool filter.
    pub pools: Vec<PoolChoice>,
    /// Any filter is set (the Clear link shows).
    pub filtered: bool,
    pub outcome: String,
    pub action: String,
    pub actor: String,
    pub target_kind: String,
    pub target_id: String,
    pub date_from: String,
    pub date_to: String,
    pub actions: Vec<&'static str>,
    pub outcomes: Vec<&'static str>,
    pub target_kinds: Vec<&'static str>,
    /// Filters that were ignored, and why.
    pub warnings: Vec<String>,
    /// Query string of the next (older) page.
    pub older: Option<String>,
}

/// One audit event in full.
#[derive(Template)]
#[template(path = "audit_event.html")]
pub struct AuditDetailPage {
    pub chrome: Chrome,
    pub event: AuditView,
    pub target_kind: String,
    pub target_id: String,
    /// Where the target is shown, when the console has a page for it.
    pub target_link: Option<String>,
    pub pool_id: String,
    /// The Pool's name and page, when it still exists and is visible.
    pub pool: Option<PoolRow>,
    /// Pretty-printed, sanitized details.
    pub details_json: String,
}

impl AuditDetailPage {
    pub fn new(
        op: &Operator,
        e: &AuditEventRow,
        pool: Option<PoolRow>,
        details: &serde_json::Value,
    ) -> Self {
        let pool_page = pool.as_ref().map(|p| format!("/admin/pools/{}", p.id));
        let target_link = match (e.target_kind.as_str(), &e.target_id) {
            ("pool", Some(id)) if pool.as_ref().is_some_and(|p| &p.id == id) => pool_page.clone(),
            ("api_key", Some(_)) => pool_page.as_ref().map(|p| format!("{p}#keys")),
            ("upstream_identity", Some(_)) => pool_page.as_ref().map(|p| format!("{p}#upstreams")),
            ("operator", Some(_)) if op.is_owner() => Some("/admin/operators".into()),
            _ => None,
        };
        AuditDetailPage {
            chrome: Chrome::for_operator(op, "audit"),
            event: AuditView::from(e),
            target_kind: e.target_kind.clone(),
            target_id: e.target_id.clone().unwrap_or_default(),
            target_link,
            pool_id: e.pool_id.clone().unwrap_or_default(),
            pool,
            details_json: serde_json::to_string_pretty(details).unwrap_or_default(),
        }
    }
}

/// One of the operator's sessions, formatted.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub created: String,
    pub last_seen: String,
    pub ip: String,
    pub user_agent: String,
    /// The session this page was requested with.
    pub current: bool,
}

impl SessionView {
    pub fn new(row: &OperatorSessionRow, current: Option<&str>) -> Self {
        SessionView {
            id: row.id.clone(),
            created: format_time(row.created_at),
            last_seen: format_time(row.last_seen_at),
            ip: row.ip.clone().unwrap_or_else(|| "—".into()),
            user_agent: row.user_agent.clone().unwrap_or_else(|| "—".into()),
            current: current == Some(row.id.as_str()),
        }
    }
}

/// One of the operator's API tokens, formatted (never the hash).
#[derive(Debug, Clone)]
pub struct TokenView {
    pub id: String,
    pub label: String,
    pub prefix: String,
    pub created: String,
    /// `never` until the token authenticated a call.
    pub last_used: String,
    pub active: bool,
}

impl From<&OperatorTokenSummary> for TokenView {
    fn from(t: &OperatorTokenSummary) -> Self {
        TokenView {
            id: t.id.clone(),
            label: t.label.clone(),
            prefix: t.token_prefix.clone(),
            created: format_time(t.created_at),
            last_used: t.last_used_at.map_or_else(|| "never".into(), format_time),
            active: t.revoked_at.is_none(),
        }
    }
}

/// The operator's own security settings: second factor, password, sessions,
/// API tokens.
#[derive(Template)]
#[template(path = "security.html")]
pub struct SecurityPage {
    pub chrome: Chrome,
    pub totp_enabled: bool,
    pub totp_pending: bool,
    pub recovery_codes_left: i64,
    pub sessions: Vec<SessionView>,
    /// Live sessions other than the current one.
    pub other_sessions: usize,
    pub tokens: Vec<TokenView>,
    /// The label typed into the new-token form, kept after a refusal.
    pub token_label: String,
    pub error: Option<String>,
    pub notice: Option<String>,
}

/// A just-created API token, shown once.
#[derive(Template)]
#[template(path = "operator_token_created.html")]
pub struct TokenCreatedPage {
    pub chrome: Chrome,
    pub label: String,
    pub prefix: String,
    pub raw_token: String,
}

/// A pending TOTP secret to add to an authenticator app.
#[derive(Template)]
#[template(path = "totp_setup.html")]
pub struct TotpSetupPage {
    pub chrome: Chrome,
    /// Base32, as typed into an app.
    pub secret: String,
    /// The `otpauth://` URI.
    pub uri: String,
    pub error: Option<String>,
}

/// The recovery codes of a just-enabled second factor, shown once.
#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage {
    pub chrome: Chrome,
    pub codes: Vec<String>,
}

/// The second step of signing in, for an operator with TOTP on.
#[derive(Template)]
#[template(path = "login_totp.html")]
pub struct LoginTotpPage {
    pub chrome: Chrome,
    pub email: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(ms: i64) -> String {
    crate::time::format_utc(ms, ' ', " UTC")
}

fn opt_time(ms: Option<i64>) -> String {
    ms.map(format_time).unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times_format_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_767_225_599_000), "2025-12-31 23:59:59 UTC");
        assert_eq!(format_time(-1000), "1969-12-31 23:59:59 UTC");
    }
}
