//! The Request logs page (`/admin/request-logs`) and a row's detail
//! (`/admin/request-logs/{id}`): the seed document's filters, columns and
//! operator hints, over the same validated filters as the JSON twin.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ConsoleError;
use super::session::PageOperator;
use super::views::{Chrome, render};
use crate::admin::request_logs::{STATUSES, parse_filters};
use crate::runtime::Runtime;
use crate::store::console_options::AccountOption;
use crate::store::{AttemptLogRow, RequestCursor, RequestLogRow};

/// Rows per page.
pub const PAGE_SIZE: i64 = 50;

/// One table row, ready to show.
pub struct RowView {
    pub id: String,
    pub short_id: String,
    /// The row's page position (`admitted_at_id`), as `before` takes it.
    pub cursor: String,
    pub status: String,
    pub icon: &'static str,
    pub time: String,
    pub account: String,
    pub pool: String,
    pub plan: String,
    pub model: String,
    pub key: String,
    pub transport: &'static str,
    pub route: String,
    pub latency: String,
    pub usage: String,
    pub cost: String,
    pub error: String,
    pub hint: &'static str,
}

/// Operator hints for sanitized error codes: one line each, naming where to
/// look next. The page's live updates get the same table (see [`labels_json`]).
const HINTS: &[(&[&str], &str)] = &[
    (
        &[
            "api_key_paused",
            "api_key_revoked",
            "api_key_expired",
            "api_key_disabled",
        ],
        "the Pool API key is not active: check its status and expiry on the API keys page",
    ),
    (
        &["model_not_allowed"],
        "the key's policy does not allow this model",
    ),
    (
        &["invalid_model"],
        "the model is not in this Pool's catalog",
    ),
    (
        &["no_eligible_backend"],
        "no active upstream account could take it: check the Pool's assignments",
    ),
    (
        &[
            "pinned_continuation_reauth_required",
            "identity_reauth_required",
        ],
        "the pinned upstream account needs reauthorization: replace its auth.json",
    ),
    (
        &["pinned_continuation_unavailable"],
        "the pinned upstream account is unavailable; the client must restart the session",
    ),
    (
        &[
            "quota_exhausted",
            "usage_limit_reached",
            "upstream_rate_limited",
        ],
        "upstream quota exhausted: see the accounts' quota windows and resets",
    ),
    (
        &["quota_evidence_unavailable"],
        "quota evidence is stale: the usage poll has not refreshed it",
    ),
    (
        &["api_key_policy_limit_exceeded"],
        "a limit of the key's policy tripped; the message names it",
    ),
    (
        &["reasoning_effort_not_allowed"],
        "the key's policy does not allow that reasoning effort",
    ),
    (
        &[
            "upstream_status",
            "upstream_network_error",
            "upstream_timeout",
            "upstream_stream_error",
            "stream_idle_timeout",
            "server_error",
            "upstream_request_failed",
        ],
        "upstream failure or timeout: see the attempts and the account's health",
    ),
    (
        &["client_disconnected"],
        "the client went away before the answer finished",
    ),
    (
        &["stale_reservation_recovered"],
        "a gateway instance stopped while this request was running",
    ),
    (
        &[
            "invalid_request",
            "unsupported_parameter",
            "unsupported_endpoint",
            "websocket_upgrade_required",
        ],
        "the request shape is not supported by this surface",
    ),
    (
        &["stream_incomplete"],
        "a stale continuation anchor: the client must resend the full context",
    ),
];

/// A one-line operator hint for a sanitized error code.
pub fn hint(code: &str) -> &'static str {
    HINTS
        .iter()
        .find(|(codes, _)| codes.contains(&code))
        .map_or("", |(_, text)| text)
}

/// Display names of the stored transports.
const TRANSPORTS: &[(&str, &str)] = &[
    ("http_json", "HTTP JSON"),
    ("http_sse", "HTTP SSE"),
    ("http_compact_json", "HTTP JSON (compact)"),
    ("websocket", "WebSocket"),
    ("http_multipart", "HTTP multipart"),
];

fn transport_label(t: &str) -> &'static str {
    TRANSPORTS
        .iter()
        .find(|(stored, _)| *stored == t)
        .map_or("other", |(_, label)| label)
}

/// Status icons; any other status shows `•`. (Glyphs that common system
/// fonts carry: `⛨` showed as an empty box on many.)
const ICONS: &[(&str, &str)] = &[
    ("succeeded", "✓"),
    ("failed", "✕"),
    ("rejected", "⊘"),
    ("in_progress", "◷"),
    ("accepted", "◷"),
];

fn icon(status: &str) -> &'static str {
    ICONS
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("•", |(_, icon)| icon)
}

/// The display tables above as one JSON object (`hints`, `transports`,
/// `icons`), handed to the page's live-update script in a data attribute so
/// rows it adds read exactly like rows rendered here.
fn labels_json() -> String {
    let hints: serde_json::Map<String, serde_json::Value> = HINTS
        .iter()
        .flat_map(|(codes, text)| codes.iter().map(move |c| ((*c).to_owned(), (*text).into())))
        .collect();
    let pairs = |table: &[(&str, &str)]| {
        table
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
    };
    serde_json::json!({"hints": hints, "transports": pairs(TRANSPORTS), "icons": pairs(ICONS)})
        .to_string()
}

fn format_time(ms: i64) -> String {
    crate::time::format_utc(ms, ' ', "Z")
}

fn view(r: &RequestLogRow) -> RowView {
    let usage = if r.usage_status == "usage_known" {
        format!(
            "in {} (cached {}) · out {} (reasoning {})",
            r.input_tokens.unwrap_or(0),
            r.cached_input_tokens.unwrap_or(0),
            r.output_tokens.unwrap_or(0),
            r.reasoning_tokens.unwrap_or(0)
        )
    } else {
        match r.usage_status.as_str() {
            "usage_unknown" => "no usage reported (usage_unknown)".to_owned(),
            "not_applicable" => "no usage: not sent upstream".to_owned(),
            _ => "not settled yet".to_owned(),
        }
    };
    let cost = match (r.settled_cost_micros, r.pricing_status.as_deref()) {
        (Some(c), _) => format!("${:.6}", c as f64 / 1_000_000.0),
        (None, Some(status)) if status != "priced" => status.to_owned(),
        _ => String::new(),
    };
    let error = r.last_error_code.clone().unwrap_or_default();
    RowView {
        id: r.id.clone(),
        // Ids are UUIDv7: the leading characters are a timestamp, the
        // trailing ones random, so the short form is the tail.
        short_id: r
            .id
            .chars()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect(),
        cursor: format!("{}_{}", r.admitted_at, r.id),
        status: r.status.clone(),
        icon: icon(&r.status),
        time: format_time(r.admitted_at),
        account: r.upstream_account_label.clone().unwrap_or_default(),
        pool: r.pool_name.clone().unwrap_or_default(),
        plan: r.upstream_account_plan.clone().unwrap_or_default(),
        model: [
            // A row refused before its body was read stores the endpoint in
            // place of the model: show no model rather than a path.
            (r.requested_model != r.endpoint).then(|| r.requested_model.clone()),
            r.reasoning_effort.clone(),
            r.service_tier.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · "),
        key: r
            .api_key_label
            .clone()
            .or_else(|| r.api_key_prefix.clone())
            .unwrap_or_default(),
        transport: transport_label(&r.transport),
        route: r.endpoint.clone(),
        latency: r.total_ms.map(|ms| format!("{ms} ms")).unwrap_or_default(),
        usage,
        cost,
        hint: hint(&error),
        error,
    }
}

/// One `<option>` of a filter dropdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// The options of a dropdown, with `current` selected. A valid current value
/// that is not among them (an account of another Pool, a model not seen
/// lately) is kept as a first extra option showing only the value itself, so
/// the filter still applies and nothing about it is disclosed.
fn choices(options: Vec<(String, String)>, current: Option<&str>) -> Vec<Choice> {
    let mut out: Vec<Choice> = options
        .into_iter()
        .map(|(value, label)| Choice {
            selected: current == Some(value.as_str()),
            value,
            label,
        })
        .collect();
    if let Some(current) = current
        && !out.iter().any(|c| c.selected)
    {
        out.insert(
            0,
            Choice {
                value: current.to_owned(),
                label: format!("{current} (not listed)"),
                selected: true,
            },
        );
    }
    out
}

/// An account's option text: its label, and its email when that adds something.
fn account_label(a: &AccountOption) -> String {
    match &a.email {
        Some(email) if !email.is_empty() && *email != a.label => format!("{} · {email}", a.label),
        _ => a.label.clone(),
    }
}

#[derive(Template)]
#[template(path = "request_logs.html")]
pub struct LogsPage {
    pub chrome: Chrome,
    pub rows: Vec<RowView>,
    pub warnings: Vec<String>,
    pub statuses: Vec<&'static str>,
    pub pools: Vec<(String, String)>,
    /// Accounts of the visible Pools (of the selected Pool only, if any).
    pub accounts: Vec<Choice>,
    /// Models seen lately in the visible Pools (in the selected Pool, if any).
    pub models: Vec<Choice>,
    pub q: BTreeMap<String, String>,
    pub older: Option<String>,
    /// The current filters as a query string (no paging), for the export links.
    pub export_query: String,
    /// Live updates run on the first page only.
    pub live: bool,
    /// `live=0`: the operator paused them.
    pub live_paused: bool,
    /// [`labels_json`], for the live-update script.
    pub labels: String,
}

impl LogsPage {
    pub fn value(&self, key: &str) -> String {
        self.q.get(key).cloned().unwrap_or_default()
    }
}

pub async fn list(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let mut parsed = parse_filters(&params);
    let before = match params
        .get("before")
        .map(String::as_str)
        .filter(|b| !b.is_empty())
    {
        None => None,
        Some(text) => {
            let cursor = text.split_once('_').and_then(|(at, id)| {
                Some(RequestCursor {
                    admitted_at: at.parse().ok()?,
                    id: id.to_owned(),
                })
            });
            if cursor.is_none() {
                parsed
                    .warnings
                    .push("before: not a page position; showing the newest rows".into());
            }
            cursor
        }
    };
    let scope = (!op.is_owner()).then(|| op.id.clone());
    let rows = rt
        .store
        .list_request_logs_filtered(&parsed.filter, PAGE_SIZE, before.as_ref(), scope.as_deref())
        .await?;
    let pools = rt
        .store
        .list_pool_overviews(op.scope())
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    // Choices follow the operator's scope and the selected Pool (a Pool outside
    // the scope yields none).
    let selected_pool = parsed.filter.pool_id.as_deref();
    let accounts = rt
        .store
        .list_account_options(op.scope(), selected_pool)
        .await?
        .iter()
        .map(|a| (a.id.clone(), account_label(a)))
        .collect();
    let models = rt
        .store
        .list_model_options(op.scope(), selected_pool)
        .await?
        .into_iter()
        .map(|m| (m.clone(), m))
        .collect();
    let older = (rows.len() as i64 == PAGE_SIZE)
        .then(|| rows.last().map(|r| format!("{}_{}", r.admitted_at, r.id)))
        .flatten()
        .map(|cursor| {
            let mut q: Vec<(String, String)> = params
                .iter()
                .filter(|(k, _)| *k != "before")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            q.push(("before".into(), cursor));
            serde_urlencoded::to_string(q).unwrap_or_default()
        });
    Ok(render(
        &LogsPage {
            chrome: Chrome::for_operator(&op, "logs"),
            rows: rows.iter().map(view).collect(),
            statuses: STATUSES.to_vec(),
            pools,
            accounts: choices(accounts, parsed.filter.upstream_identity_id.as_deref()),
            models: choices(models, parsed.filter.model.as_deref()),
            warnings: parsed.warnings,
            export_query: serde_urlencoded::to_string(
                params
                    .iter()
                    .filter(|(k, _)| *k != "before" && *k != "live")
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
            live: before.is_none(),
            live_paused: params.get("live").is_some_and(|v| v == "0"),
            labels: labels_json(),
            q: params,
            older,
        },
        StatusCode::OK,
    ))
}

/// `GET /admin/assets/request-logs.js`: the Request logs page's live updates
/// (a same-origin file, as the pages' Content-Security-Policy requires).
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../../static/request-logs.js"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "request_log.html")]
pub struct DetailPage {
    pub chrome: Chrome,
    pub row: RowView,
    pub raw: RequestLogRow,
    pub attempts: Vec<AttemptLogRow>,
    pub metadata: String,
    pub audit_link: String,
}

pub async fn detail(
    State(rt): State<Arc<Runtime>>,
    PageOperator(op): PageOperator,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let scope = (!op.is_owner()).then(|| op.id.clone());
    let Some((row, attempts)) = rt.store.get_request_log(&id, scope.as_deref()).await? else {
        return Err(ConsoleError::NotFound("request not found".into()));
    };
    let metadata = serde_json::from_str::<serde_json::Value>(&row.request_metadata)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default();
    Ok(render(
        &DetailPage {
            chrome: Chrome::for_operator(&op, "logs"),
            row: view(&row),
            audit_link: format!("/admin/audit?pool_id={}", row.pool_id),
            raw: row,
            attempts,
            metadata,
        },
        StatusCode::OK,
    ))
}

/// Rows fetched per page while exporting.
const EXPORT_PAGE: i64 = 500;

/// Columns of the CSV export, in order (never the metadata blob).
const CSV_COLUMNS: &[&str] = &[
    "id",
    "admitted_at",
    "status",
    "usage_status",
    "pool_name",
    "api_key_label",
    "api_key_prefix",
    "endpoint",
    "transport",
    "requested_model",
    "reasoning_effort",
    "service_tier",
    "upstream_account_label",
    "upstream_account_plan",
    "response_status_code",
    "retry_count",
    "last_error_code",
    "total_ms",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "settled_cost_micros",
    "pricing_status",
    "client_request_id",
];

fn csv_field(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(row: &RequestLogRow) -> String {
    let value = serde_json::to_value(row).unwrap_or_default();
    let mut line = CSV_COLUMNS
        .iter()
        .map(|c| csv_field(&value[*c]))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// `GET /admin/api/request-logs/export?format=csv|ndjson&…filters`: the
/// filtered set, newest first, streamed page by page (no full buffering).
pub async fn export(
    State(rt): State<Arc<Runtime>>,
    super::session::ApiOperator(op): super::session::ApiOperator,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let csv = match params.get("format").map(String::as_str) {
        None | Some("ndjson") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ConsoleError::BadRequest(
                "format must be csv or ndjson".into(),
            ));
        }
    };
    let mut filter_params = params.clone();
    filter_params.remove("format");
    let parsed = parse_filters(&filter_params);
    let scope = (!op.is_owner()).then(|| op.id.clone());
    struct State2 {
        rt: Arc<Runtime>,
        filter: crate::store::RequestLogFilter,
        scope: Option<String>,
        cursor: Option<RequestCursor>,
        header_pending: bool,
        done: bool,
        csv: bool,
    }
    let state = State2 {
        rt,
        filter: parsed.filter,
        scope,
        cursor: None,
        header_pending: csv,
        done: false,
        csv,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.header_pending {
            st.header_pending = false;
            let mut header = CSV_COLUMNS.join(",");
            header.push('\n');
            return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(header)), st));
        }
        if st.done {
            return None;
        }
        let rows = match st
            .rt
            .store
            .list_request_logs_filtered(
                &st.filter,
                EXPORT_PAGE,
                st.cursor.as_ref(),
                st.scope.as_deref(),
            )
            .await
        {
            Ok(rows) => rows,
            Err(err) => {
                return Some((
                    Err(std::io::Error::other(err.to_string())),
                    State2 { done: true, ..st },
                ));
            }
        };
        if rows.is_empty() {
            return None;
        }
        st.done = (rows.len() as i64) < EXPORT_PAGE;
        st.cursor = rows.last().map(|r| RequestCursor {
            admitted_at: r.admitted_at,
            id: r.id.clone(),
        });
        let mut chunk = String::new();
        for row in &rows {
            if st.csv {
                chunk.push_str(&csv_line(row));
            } else {
                chunk.push_str(&serde_json::to_string(row).unwrap_or_default());
                chunk.push('\n');
            }
        }
        Some((Ok(bytes::Bytes::from(chunk)), st))
    });
    let (content_type, name) = if csv {
        ("text/csv; charset=utf-8", "request-logs.csv")
    } else {
        ("application/x-ndjson", "request-logs.ndjson")
    };
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_796_396_400_000), "2026-12-04 15:00:00Z");
    }

    #[test]
    fn a_current_value_missing_from_the_options_is_kept_bare() {
        let options = vec![("a1".to_owned(), "Alpha".to_owned())];
        let listed = choices(options.clone(), Some("a1"));
        assert_eq!(listed.len(), 1);
        assert!(listed[0].selected);
        let unlisted = choices(options.clone(), Some("zz"));
        assert_eq!(unlisted.len(), 2);
        assert_eq!(
            (unlisted[0].value.as_str(), unlisted[0].label.as_str()),
            ("zz", "zz (not listed)")
        );
        assert!(unlisted[0].selected && !unlisted[1].selected);
        assert!(choices(options, None).iter().all(|c| !c.selected));
    }

    #[test]
    fn the_script_gets_every_hint_and_label() {
        let labels: serde_json::Value =
            serde_json::from_str(&labels_json()).expect("labels are JSON");
        assert_eq!(labels["hints"]["server_error"], hint("server_error"));
        assert_eq!(labels["transports"]["http_sse"], "HTTP SSE");
        assert_eq!(labels["icons"]["failed"], "✕");
        assert_eq!(hint("no_such_code"), "");
    }

    #[test]
    fn each_common_cause_has_a_hint() {
        for code in [
            "api_key_paused",
            "model_not_allowed",
            "no_eligible_backend",
            "pinned_continuation_reauth_required",
            "quota_exhausted",
            "upstream_status",
            "invalid_request",
        ] {
            assert!(!hint(code).is_empty(), "{code}");
        }
    }
}
