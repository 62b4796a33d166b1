//! Mutable simulator state: the simulated clock, accounts (tokens, quota,
//! scenario queues), OAuth bookkeeping, barriers and the request recording.
//!
//! Everything is behind short-lived `std::sync::Mutex` locks; no lock is ever held
//! across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::scenario::{RefreshVariant, Scenario};
use crate::tokens::{self, Identity};

/// Length of the primary (5 h) window in seconds.
pub const PRIMARY_WINDOW_SECS: i64 = 18_000;
/// Length of the secondary (weekly) window in seconds.
pub const SECONDARY_WINDOW_SECS: i64 = 604_800;
/// Primary used-percent added per successful model request.
pub const PRIMARY_STEP: f64 = 0.5;
/// Secondary used-percent added per successful model request.
pub const SECONDARY_STEP: f64 = 0.1;

/// What a new account should look like; every field is optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccountSpec {
    pub account_id: Option<String>,
    pub email: Option<String>,
    pub plan_type: Option<String>,
}

/// A copy of an account's identity and current tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountSnapshot {
    pub account_id: String,
    pub user_id: String,
    pub email: String,
    pub plan_type: String,
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
}

/// One recorded request (or websocket frame).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub seq: u64,
    pub at: i64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `"http"` or `"websocket"`.
    pub transport: String,
    pub connection_id: Option<u64>,
    pub account_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub json: Option<serde_json::Value>,
    pub scenario: Option<String>,
    /// Status answered (websocket: 101 for the handshake, 0 for frames).
    pub status: u16,
    pub pool_key_flagged: bool,
    /// Websocket frames: `"client"` or `"server"`.
    pub direction: Option<String>,
}

/// Quota windows of one account.
#[derive(Clone, Debug)]
pub(crate) struct Quota {
    pub primary_used: f64,
    pub secondary_used: f64,
    pub primary_reset_at: i64,
    pub secondary_reset_at: i64,
}

impl Quota {
    fn new(now: i64) -> Quota {
        Quota {
            primary_used: 0.0,
            secondary_used: 0.0,
            primary_reset_at: now + PRIMARY_WINDOW_SECS,
            secondary_reset_at: now + SECONDARY_WINDOW_SECS,
        }
    }

    /// Start fresh windows whose reset time has passed.
    pub fn roll(&mut self, now: i64) {
        if now >= self.primary_reset_at {
            self.primary_used = 0.0;
            self.primary_reset_at = now + PRIMARY_WINDOW_SECS;
        }
        if now >= self.secondary_reset_at {
            self.secondary_used = 0.0;
            self.secondary_reset_at = now + SECONDARY_WINDOW_SECS;
        }
    }

    /// The exhausted window, if any: (resets_at, weekly?).
    pub fn exhausted(&self) -> Option<(i64, bool)> {
        if self.secondary_used >= 100.0 {
            Some((self.secondary_reset_at, true))
        } else if self.primary_used >= 100.0 {
            Some((self.primary_reset_at, false))
        } else {
            None
        }
    }

    pub fn bump(&mut self) {
        self.primary_used = (self.primary_used + PRIMARY_STEP).min(99.5);
        self.secondary_used = (self.secondary_used + SECONDARY_STEP).min(99.9);
    }
}

/// A frozen view of an account's quota, used to build headers and events.
#[derive(Clone, Debug)]
pub(crate) struct QuotaView {
    pub now: i64,
    pub plan_type: String,
    pub quota: Quota,
}

pub(crate) struct Account {
    pub id: String,
    pub user_id: String,
    pub email: String,
    pub plan_type: String,
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
    pub quota: Quota,
    pub queue: VecDeque<(Scenario, u32)>,
    pub refresh_queue: VecDeque<RefreshVariant>,
    pub issued_calls: HashSet<String>,
    pub last_refresh: i64,
}

impl Account {
    pub fn snapshot(&self) -> AccountSnapshot {
        AccountSnapshot {
            account_id: self.id.clone(),
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            plan_type: self.plan_type.clone(),
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            id_token: self.id_token.clone(),
        }
    }

    pub fn quota_view(&self, now: i64) -> QuotaView {
        QuotaView {
            now,
            plan_type: self.plan_type.clone(),
            quota: self.quota.clone(),
        }
    }

    /// Take the next queued scenario (one use).
    pub fn pop_scenario(&mut self) -> Option<Scenario> {
        let (scenario, left) = self.queue.front_mut()?;
        let s = scenario.clone();
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.queue.pop_front();
        }
        Some(s)
    }

    /// Take the next scenario only when it is a websocket handshake refusal.
    pub fn pop_ws_refusal(&mut self) -> Option<u16> {
        match self.queue.front() {
            Some((Scenario::WsRefuse(code), _)) => {
                let code = *code;
                self.pop_scenario();
                Some(code)
            }
            _ => None,
        }
    }
}

pub(crate) struct AccessEntry {
    pub account_id: String,
    pub exp: i64,
    pub revoked: bool,
}

pub(crate) struct RefreshEntry {
    pub account_id: String,
    pub used: bool,
}

pub(crate) struct DeviceAuth {
    pub user_code: String,
    pub polls: u32,
    pub link_account: Option<String>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub accounts: Vec<Account>,
    pub access: HashMap<String, AccessEntry>,
    pub refresh: HashMap<String, RefreshEntry>,
    pub devices: HashMap<String, DeviceAuth>,
    /// authorization code → account to link (None = create a new account).
    pub auth_codes: HashMap<String, Option<String>>,
    pub next_account_no: usize,
}

impl Inner {
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }

    pub fn account_mut(&mut self, id: &str) -> Option<&mut Account> {
        self.accounts.iter_mut().find(|a| a.id == id)
    }
}

/// The bounded ring of recorded requests.
pub(crate) struct Recorder {
    pub limit: usize,
    pub items: VecDeque<RecordedRequest>,
}

/// State shared by every handler.
pub(crate) struct Shared {
    pub config: SimConfig,
    clock_offset: AtomicI64,
    pub inner: Mutex<Inner>,
    recorder: Mutex<Recorder>,
    seq: AtomicU64,
    ids: AtomicU64,
    pub refresh_calls: AtomicUsize,
    barriers: Mutex<HashMap<String, watch::Sender<bool>>>,
    pub shutdown: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another handler panicked mid-update; the data is
    // still usable for a test double, so keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Shared {
    pub fn new(config: SimConfig) -> Shared {
        let limit = config.record_limit;
        Shared {
            config,
            clock_offset: AtomicI64::new(0),
            inner: Mutex::new(Inner::default()),
            recorder: Mutex::new(Recorder {
                limit,
                items: VecDeque::new(),
            }),
            seq: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            refresh_calls: AtomicUsize::new(0),
            barriers: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Simulated unix seconds.
    pub fn now(&self) -> i64 {
        real_now() + self.clock_offset.load(Ordering::SeqCst)
    }

    pub fn advance_clock(&self, seconds: i64) {
        self.clock_offset.fetch_add(seconds, Ordering::SeqCst);
    }

    /// A fresh number for ids (`resp_sim_N`, request ids, …).
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn bench(&self) -> bool {
        self.config.bench.is_some()
    }

    // ---- accounts and tokens -------------------------------------------------

    /// Mint a new access/id token pair for `acct` and register the access token.
    fn mint_tokens(&self, inner: &mut Inner, idx: usize, now: i64) {
        let ttl = self.config.access_token_ttl_secs;
        let jti = self.next_id();
        let (access, id_token, account_id) = {
            let a = &inner.accounts[idx];
            let ident = Identity {
                account_id: &a.id,
                user_id: &a.user_id,
                email: &a.email,
                plan_type: &a.plan_type,
            };
            (
                tokens::access_token(&ident, now, now + ttl, jti),
                tokens::id_token(&ident, now, now + ttl, jti),
                a.id.clone(),
            )
        };
        inner.access.insert(
            access.clone(),
            AccessEntry {
                account_id,
                exp: now + ttl,
                revoked: false,
            },
        );
        let a = &mut inner.accounts[idx];
        a.access_token = access;
        a.id_token = id_token;
        a.last_refresh = now;
    }

    fn new_refresh_token(&self, inner: &mut Inner, idx: usize) {
        let n = self.next_id();
        let account_id = inner.accounts[idx].id.clone();
        let rt = format!("rt_sim_{account_id}_{n}");
        inner.refresh.insert(
            rt.clone(),
            RefreshEntry {
                account_id,
                used: false,
            },
        );
        inner.accounts[idx].refresh_token = rt;
    }

    pub fn create_account_locked(&self, inner: &mut Inner, spec: AccountSpec) -> AccountSnapshot {
        inner.next_account_no += 1;
        let no = inner.next_account_no;
        let mut id = spec.account_id.unwrap_or_else(|| format!("acct_sim_{no}"));
        if inner.account(&id).is_some() {
            // Never create two accounts with the same id; make it unique instead.
            id = format!("{id}_{no}");
        }
        let plan_type = spec
            .plan_type
            .unwrap_or_else(|| if no == 2 { "pro" } else { "plus" }.to_string());
        let email = spec
            .email
            .unwrap_or_else(|| format!("sim{no}@example.test"));
        let now = self.now();
        inner.accounts.push(Account {
            user_id: format!("user_sim_{no}"),
            id,
            email,
            plan_type,
            access_token: String::new(),
            refresh_token: String::new(),
            id_token: String::new(),
            quota: Quota::new(now),
            queue: VecDeque::new(),
            refresh_queue: VecDeque::new(),
            issued_calls: HashSet::new(),
            last_refresh: now,
        });
        let idx = inner.accounts.len() - 1;
        self.mint_tokens(inner, idx, now);
        self.new_refresh_token(inner, idx);
        inner.accounts[idx].snapshot()
    }

    pub fn create_account(&self, spec: AccountSpec) -> AccountSnapshot {
        let mut inner = self.lock();
        self.create_account_locked(&mut inner, spec)
    }

    /// Rotate tokens after a successful refresh or code exchange.
    pub fn rotate_tokens(&self, inner: &mut Inner, account_id: &str) -> Option<AccountSnapshot> {
        let idx = inner.accounts.iter().position(|a| a.id == account_id)?;
        let now = self.now();
        self.mint_tokens(inner, idx, now);
        self.new_refresh_token(inner, idx);
        Some(inner.accounts[idx].snapshot())
    }

    /// Revoke every access token of an account (refresh tokens stay valid).
    pub fn expire_access_tokens(&self, inner: &mut Inner, account_id: &str) {
        for entry in inner.access.values_mut() {
            if entry.account_id == account_id {
                entry.revoked = true;
            }
        }
    }

    pub fn auth_json(&self, account_id: &str) -> Option<serde_json::Value> {
        let inner = self.lock();
        let a = inner.account(account_id)?;
        Some(serde_json::json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": a.id_token,
                "access_token": a.access_token,
                "refresh_token": a.refresh_token,
                "account_id": a.id,
            },
            "last_refresh": rfc3339(a.last_refresh),
        }))
    }

    // ---- barriers ------------------------------------------------------------

    fn barrier(&self, name: &str) -> watch::Sender<bool> {
        lock(&self.barriers)
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(false).0)
            .clone()
    }

    pub fn release_barrier(&self, name: &str) {
        self.barrier(name).send_replace(true);
    }

    /// Wait until `name` is released (returns at once if it already was).
    pub async fn wait_barrier(&self, name: &str) {
        let mut rx = self.barrier(name).subscribe();
        // The sender lives in the map (or is replaced by reset); an error only
        // means the barrier was dropped by `reset`, which also ends the wait.
        let _ = rx.wait_for(|released| *released).await;
    }

    // ---- recording -----------------------------------------------------------

    pub fn record(&self, mut r: RecordedRequest) {
        if self.bench() {
            return;
        }
        r.seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rec = lock(&self.recorder);
        if rec.limit == 0 {
            return;
        }
        while rec.items.len() >= rec.limit {
            rec.items.pop_front();
        }
        rec.items.push_back(r);
    }

    /// Set the scenario of the latest recorded client frame of a websocket connection.
    pub fn annotate_last(&self, connection_id: u64, scenario: &str) {
        let mut rec = lock(&self.recorder);
        if let Some(r) = rec.items.iter_mut().rev().find(|r| {
            r.connection_id == Some(connection_id) && r.direction.as_deref() == Some("client")
        }) {
            r.scenario = Some(scenario.to_string());
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.recorder).items.iter().cloned().collect()
    }

    pub fn reset(&self) {
        lock(&self.recorder).items.clear();
        {
            let mut inner = self.lock();
            for a in &mut inner.accounts {
                a.queue.clear();
                a.refresh_queue.clear();
            }
        }
        // Release waiters of dropped barriers so no stream hangs forever.
        let old: Vec<_> = lock(&self.barriers).drain().map(|(_, tx)| tx).collect();
        for tx in old {
            tx.send_replace(true);
        }
    }
}

/// Format unix seconds as an RFC 3339 UTC timestamp (`2026-08-01T10:00:00.000000Z`).
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_767_000_000), "2025-12-29T09:20:00.000000Z");
    }

    #[test]
    fn quota_rolls_after_reset() {
        let mut q = Quota::new(1000);
        q.primary_used = 100.0;
        assert_eq!(q.exhausted(), Some((1000 + PRIMARY_WINDOW_SECS, false)));
        q.roll(1000 + PRIMARY_WINDOW_SECS);
        assert_eq!(q.exhausted(), None);
        assert_eq!(q.primary_used, 0.0);
    }
}
