//! Shared state of the running gateway and the in-memory views that keep the
//! database off the request path: verified API keys, Pool routing snapshots,
//! decrypted upstream credentials, quota exhaustion, and single-flight token
//! refresh. Each cached view expires after a few seconds so changes made by
//! other instances or the command line are picked up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::crypto::{KEY_VERSION, SecretBox};
use crate::domain::jwt::decode_claims;
use crate::domain::pricing::PriceTable;
use crate::recorder::Recorder;
use crate::store::{
    ApiKeyRow, AssignmentRow, QuotaObservation, SealedSecret, Store, StoreError, SyncedModel,
};
use crate::time::{now_ms, now_secs};

const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
const POOL_CACHE_TTL: Duration = Duration::from_secs(3);
const KEY_CACHE_MAX: usize = 50_000;
/// How long one instance may hold an identity's refresh lease.
const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// Refresh an access token this long before its `exp`.
const PROACTIVE_REFRESH_SECS: i64 = 60;

/// The decrypted credential bundle of an upstream identity.
#[derive(Clone, Serialize, Deserialize)]
pub struct UpstreamSecret {
    pub access_token: String,
    pub refresh_token: String,
    #[serde(default)]
    pub id_token: Option<String>,
}

impl std::fmt::Debug for UpstreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamSecret(..)")
    }
}

/// Credentials in memory with the generation they were stored under.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub secret: UpstreamSecret,
    pub generation: i64,
    pub expires_at: Option<i64>,
}

/// Per-identity state shared by every Pool that holds the identity.
#[derive(Debug)]
pub struct IdentityState {
    pub id: String,
    credentials: RwLock<Credentials>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Unix seconds until which the account is known to be out of quota.
    exhausted_until: AtomicI64,
    /// Latest known used percent per window kind, with its reset.
    quota: Mutex<HashMap<String, QuotaWindow>>,
}

/// Quota evidence older than this no longer ranks accounts (`quota_first`);
/// an exhausted window still excludes its account until its reset.
pub const QUOTA_EVIDENCE_FRESH_MS: i64 = 15 * 60 * 1000;

/// One quota window as last observed.
#[derive(Debug, Clone, Copy)]
pub struct QuotaWindow {
    pub used_percent: f64,
    pub reset_at: Option<i64>,
    pub observed_at: i64,
}

impl IdentityState {
    pub fn credentials(&self) -> Credentials {
        match self.credentials.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_credentials(&self, creds: Credentials) {
        match self.credentials.write() {
            Ok(mut c) => *c = creds,
            Err(poisoned) => *poisoned.into_inner() = creds,
        }
    }

    /// Records quota exhaustion until `reset_at` (unix seconds).
    pub fn mark_exhausted_until(&self, reset_at: i64) {
        self.exhausted_until.fetch_max(reset_at, Ordering::Relaxed);
    }

    /// Whether the account is known to be out of quota now.
    pub fn is_exhausted(&self, now: i64) -> bool {
        self.exhausted_until.load(Ordering::Relaxed) > now
    }

    pub fn exhausted_until(&self) -> i64 {
        self.exhausted_until.load(Ordering::Relaxed)
    }

    /// Remembers an observed window; a window at 100 % with a reset marks the
    /// account out of quota until then.
    pub fn observe_window(&self, kind: &str, window: QuotaWindow) {
        if window.used_percent >= 100.0
            && let Some(reset) = window.reset_at
        {
            self.mark_exhausted_until(reset);
        }
        if let Ok(mut q) = self.quota.lock() {
            q.insert(kind.to_owned(), window);
        }
    }

    /// Remaining quota score for `quota_first`: the smallest `100 − used` over
    /// windows whose cycle has not reset yet; `None` when nothing is known.
    pub fn remaining_quota(&self, now: i64) -> Option<f64> {
        let q = self.quota.lock().ok()?;
        q.values()
            .filter(|w| now * 1000 - w.observed_at <= QUOTA_EVIDENCE_FRESH_MS)
            .map(|w| {
                if w.reset_at.is_some_and(|r| r <= now) {
                    100.0
                } else {
                    (100.0 - w.used_percent).max(0.0)
                }
            })
            .reduce(f64::min)
    }
}

/// One assignment of a Pool as the router sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub assignment_id: String,
    pub identity: Arc<IdentityState>,
    pub label: String,
    pub email: Option<String>,
    pub plan_type: Option<String>,
    pub chatgpt_account_id: String,
    pub base_url: String,
    pub auth_base_url: String,
    /// False when the assignment or identity is paused or needs reauthorization.
    pub routable: bool,
    pub exclusion: Option<&'static str>,
}

/// A Pool's routing view.
#[derive(Debug)]
pub struct PoolSnapshot {
    pub pool_id: String,
    pub active: bool,
    pub ring_size: usize,
    pub strategy: String,
    pub v1_compatibility_enabled: bool,
    /// Which anchors may seed routing (see `proxy::routing::seed_for`).
    pub seed_policy: crate::proxy::routing::SeedPolicy,
    pub candidates: Vec<Candidate>,
    /// Catalog slugs with their raw JSON, sorted by slug.
    pub models: Vec<(String, String)>,
    loaded_at: Instant,
}

impl PoolSnapshot {
    /// Whether the Pool's catalog knows `model`. An empty catalog (never synced)
    /// knows nothing and forbids nothing.
    pub fn model_known(&self, model: &str) -> Option<bool> {
        if self.models.is_empty() {
            None
        } else {
            Some(self.models.iter().any(|(slug, _)| slug == model))
        }
    }
}

#[derive(Clone)]
enum CachedKey {
    Found(Arc<ApiKeyRow>, Instant),
    Missing(Instant),
}

/// Why a token refresh failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The refresh token is dead; the account needs a new login.
    ReauthRequired(String),
    /// The token endpoint failed in a way that may pass.
    Transient(String),
}

impl RefreshError {
    pub fn code(&self) -> &str {
        match self {
            RefreshError::ReauthRequired(c) | RefreshError::Transient(c) => c,
        }
    }
}

/// The gateway's shared state.
pub struct Runtime {
    pub settings: Settings,
    pub store: Store,
    pub secret_box: SecretBox,
    prices: RwLock<Arc<PriceTable>>,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    keys: RwLock<HashMap<String, CachedKey>>,
    policies: RwLock<HashMap<String, (Arc<crate::store::KeyPolicy>, Instant)>>,
    pools: RwLock<HashMap<String, Arc<PoolSnapshot>>>,
    pool_load: tokio::sync::Mutex<()>,
    identities: Mutex<HashMap<String, Arc<IdentityState>>>,
    key_last_used: Mutex<HashMap<String, i64>>,
    quota_written: Mutex<HashMap<(String, String), WrittenQuota>>,
    turn_pins: Mutex<HashMap<String, (String, Instant)>>,
    /// Seconds added to the wall clock (tests move time forward with it).
    clock_offset: AtomicI64,
    pub health: crate::health::Health,
    /// Failed console sign-ins per (email, address), this instance only.
    pub sign_in_throttle: crate::health::SignInThrottle,
    /// This process's identity in `gateway_instances`.
    pub instance_id: String,
    /// SQLite only: the turn at the write lock that the recorder and key
    /// reservations share (see `recorder`).
    pub write_gate: crate::recorder::WriteGate,
}

/// How long a turn-state pin is remembered, and how many are kept.
const TURN_PIN_TTL: Duration = Duration::from_secs(3600);
const TURN_PIN_MAX: usize = 100_000;

/// The last quota window written for an identity, to skip unchanged rewrites.
#[derive(Debug, Clone, Copy)]
struct WrittenQuota {
    used_percent: f64,
    reset_at: Option<i64>,
    at: Instant,
}

/// Quota evidence is rewritten when usage moved by this much, the reset moved,
/// or this long has passed.
const QUOTA_REWRITE_PERCENT: f64 = 1.0;
const QUOTA_REWRITE_AFTER: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

/// Builds the upstream HTTP client.
pub fn build_http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
}

impl Runtime {
    pub fn new(
        settings: Settings,
        store: Store,
        secret_box: SecretBox,
        prices: PriceTable,
        http: reqwest::Client,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let instance_id = crate::time::new_id();
        let write_gate =
            matches!(store, Store::Sqlite(_)).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let recorder = Recorder::start(
            store.clone(),
            &tasks,
            instance_id.clone(),
            write_gate.clone(),
        );
        Runtime {
            settings,
            store,
            secret_box,
            prices: RwLock::new(Arc::new(prices)),
            http,
            recorder,
            tasks,
            shutdown,
            keys: RwLock::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
            pools: RwLock::new(HashMap::new()),
            pool_load: tokio::sync::Mutex::new(()),
            identities: Mutex::new(HashMap::new()),
            key_last_used: Mutex::new(HashMap::new()),
            quota_written: Mutex::new(HashMap::new()),
            turn_pins: Mutex::new(HashMap::new()),
            clock_offset: AtomicI64::new(0),
            health: crate::health::Health::default(),
            sign_in_throttle: crate::health::SignInThrottle::default(),
            instance_id,
            write_gate,
        }
    }

    /// The price table in force (the newest pricing snapshot this instance
    /// has loaded).
    pub fn prices(&self) -> Arc<PriceTable> {
        Arc::clone(&self.prices.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a newer price table in force.
    pub fn set_prices(&self, table: PriceTable) {
        *self.prices.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// Unix seconds on the gateway's clock.
    pub fn now_secs(&self) -> i64 {
        now_secs() + self.clock_offset.load(Ordering::Relaxed)
    }

    /// Unix milliseconds on the gateway's clock.
    pub fn now_ms(&self) -> i64 {
        now_ms() + self.clock_offset.load(Ordering::Relaxed) * 1000
    }

    /// Moves the gateway's clock forward (tests that simulate the passage of time).
    pub fn advance_clock(&self, seconds: i64) {
        self.clock_offset.fetch_add(seconds, Ordering::Relaxed);
    }

    /// Forgets every cached view (after an admin change in this process).
    pub fn invalidate_caches(&self) {
        if let Ok(mut keys) = self.keys.write() {
            keys.clear();
        }
        if let Ok(mut policies) = self.policies.write() {
            policies.clear();
        }
        if let Ok(mut pools) = self.pools.write() {
            pools.clear();
        }
    }

    /// Looks an API key up by prefix, through a short-lived cache that also
    /// remembers unknown prefixes (so unknown keys cannot flood the database).
    pub async fn api_key(&self, prefix: &str) -> Result<Option<Arc<ApiKeyRow>>, StoreError> {
        if let Ok(keys) = self.keys.read()
            && let Some(entry) = keys.get(prefix)
        {
            match entry {
                CachedKey::Found(row, at) if at.elapsed() < KEY_CACHE_TTL => {
                    return Ok(Some(row.clone()));
                }
                CachedKey::Missing(at) if at.elapsed() < KEY_CACHE_TTL => return Ok(None),
                _ => {}
            }
        }
        let row = self
            .store
            .find_api_key_by_prefix(prefix)
            .await?
            .map(Arc::new);
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() >= KEY_CACHE_MAX {
                keys.retain(|_, v| match v {
                    CachedKey::Found(_, at) | CachedKey::Missing(at) => {
                        at.elapsed() < KEY_CACHE_TTL
                    }
                });
                if keys.len() >= KEY_CACHE_MAX {
                    keys.clear();
                }
            }
            let entry = match &row {
                Some(r) => CachedKey::Found(r.clone(), Instant::now()),
                None => CachedKey::Missing(Instant::now()),
            };
            keys.insert(prefix.to_owned(), entry);
        }
        Ok(row)
    }

    /// The key's policy, through the same short-lived cache as keys.
    pub async fn key_policy(
        &self,
        api_key_id: &str,
    ) -> Result<Arc<crate::store::KeyPolicy>, StoreError> {
        if let Ok(map) = self.policies.read()
            && let Some((p, at)) = map.get(api_key_id)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(p.clone());
        }
        let policy = Arc::new(self.store.load_key_policy(api_key_id).await?);
        if let Ok(mut map) = self.policies.write() {
            if map.len() >= KEY_CACHE_MAX {
                map.clear();
            }
            map.insert(api_key_id.to_owned(), (policy.clone(), Instant::now()));
        }
        Ok(policy)
    }

    /// Notes that a key was used; written at most once a minute per key.
    pub fn touch_key(&self, api_key_id: &str) {
        let now = now_ms();
        let due = match self.key_last_used.lock() {
            Ok(mut map) => {
                let last = map.get(api_key_id).copied().unwrap_or(0);
                if now - last >= 60_000 {
                    map.insert(api_key_id.to_owned(), now);
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if due {
            self.recorder.send_now(crate::store::RecordEvent::KeyUsed {
                api_key_id: api_key_id.to_owned(),
                at: now,
            });
        }
    }

    /// Remembers which assignment issued an `x-codex-turn-state`, so later
    /// requests of the same turn go back to it.
    pub fn pin_turn_state(&self, turn_state: &str, assignment_id: &str) {
        if turn_state.is_empty() || turn_state.len() > 512 {
            return;
        }
        if let Ok(mut pins) = self.turn_pins.lock() {
            if pins.len() >= TURN_PIN_MAX {
                pins.retain(|_, (_, at)| at.elapsed() < TURN_PIN_TTL);
                if pins.len() >= TURN_PIN_MAX {
                    pins.clear();
                }
            }
            pins.insert(
                turn_state.to_owned(),
                (assignment_id.to_owned(), Instant::now()),
            );
        }
    }

    /// The assignment that issued a turn state, if remembered.
    pub fn turn_state_pin(&self, turn_state: &str) -> Option<String> {
        let pins = self.turn_pins.lock().ok()?;
        let (id, at) = pins.get(turn_state)?;
        (at.elapsed() < TURN_PIN_TTL).then(|| id.clone())
    }

    /// Takes quota windows read from an upstream response: an exhausted window
    /// marks the account out of quota until its reset; windows that changed
    /// enough since last written are returned for recording.
    pub fn observe_quota(
        &self,
        identity: &IdentityState,
        windows: Vec<QuotaObservation>,
    ) -> Vec<QuotaObservation> {
        let mut out = Vec::new();
        let Ok(mut written) = self.quota_written.lock() else {
            return windows;
        };
        for w in windows {
            identity.observe_window(
                &w.window_kind,
                QuotaWindow {
                    used_percent: w.used_percent,
                    reset_at: w.reset_at,
                    observed_at: w.observed_at,
                },
            );
            let key = (w.identity_id.clone(), w.window_kind.clone());
            let due = match written.get(&key) {
                None => true,
                Some(last) => {
                    (last.used_percent - w.used_percent).abs() >= QUOTA_REWRITE_PERCENT
                        || last.reset_at.map(|r| r / 60) != w.reset_at.map(|r| r / 60)
                        || last.at.elapsed() >= QUOTA_REWRITE_AFTER
                }
            };
            if due {
                written.insert(
                    key,
                    WrittenQuota {
                        used_percent: w.used_percent,
                        reset_at: w.reset_at,
                        at: Instant::now(),
                    },
                );
                out.push(w);
            }
        }
        out
    }

    /// The Pool's routing snapshot, reloaded when older than a few seconds.
    pub async fn pool(&self, pool_id: &str) -> Result<Option<Arc<PoolSnapshot>>, StoreError> {
        if let Some(s) = self.cached_pool(pool_id) {
            return Ok(Some(s));
        }
        let _guard = self.pool_load.lock().await;
        if let Some(s) = self.cached_pool(pool_id) {
            return Ok(Some(s));
        }
        let Some(settings) = self.store.load_pool_settings(pool_id).await? else {
            return Ok(None);
        };
        let assignments = self.store.load_pool_assignments(pool_id).await?;
        let models = self
            .store
            .list_pool_models(pool_id)
            .await?
            .into_iter()
            .map(|m| (m.slug, m.raw_json))
            .collect();
        let mut candidates = Vec::with_capacity(assignments.len());
        for row in assignments {
            match self.candidate_from_row(row) {
                Ok(c) => candidates.push(c),
                Err(err) => {
                    tracing::error!(error = %err, "an upstream identity's credentials could not be decrypted")
                }
            }
        }
        let snapshot = Arc::new(PoolSnapshot {
            pool_id: settings.pool_id.clone(),
            active: settings.pool_status == "active",
            ring_size: usize::try_from(settings.bridge_ring_size)
                .unwrap_or(3)
                .max(1),
            strategy: settings.routing_strategy,
            v1_compatibility_enabled: settings.v1_compatibility_enabled,
            seed_policy: crate::proxy::routing::SeedPolicy {
                session_anchors: settings.sticky_websocket_sessions,
                prompt_cache_key: settings.prompt_cache_affinity_enabled,
                request_correlation: settings.sticky_http_sessions,
            },
            candidates,
            models,
            loaded_at: Instant::now(),
        });
        if let Ok(mut pools) = self.pools.write() {
            pools.insert(pool_id.to_owned(), snapshot.clone());
        }
        Ok(Some(snapshot))
    }

    fn cached_pool(&self, pool_id: &str) -> Option<Arc<PoolSnapshot>> {
        let pools = self.pools.read().ok()?;
        let s = pools.get(pool_id)?;
        (s.loaded_at.elapsed() < POOL_CACHE_TTL).then(|| s.clone())
    }

    fn decrypt(
        &self,
        identity_id: &str,
        ciphertext: &[u8],
        nonce: &[u8],
    ) -> Result<UpstreamSecret, String> {
        let plain = self
            .secret_box
            .open(identity_id, ciphertext, nonce)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&plain)
            .map_err(|_| "stored credential bundle is not valid".to_owned())
    }

    /// Seals a credential bundle for an identity row.
    pub fn seal(&self, identity_id: &str, secret: &UpstreamSecret) -> Result<SealedSecret, String> {
        let plain = serde_json::to_vec(secret).map_err(|e| e.to_string())?;
        let (ciphertext, nonce) = self
            .secret_box
            .seal(identity_id, &plain)
            .map_err(|e| e.to_string())?;
        Ok(SealedSecret {
            ciphertext,
            nonce,
            key_version: KEY_VERSION,
        })
    }

    fn candidate_from_row(&self, row: AssignmentRow) -> Result<Candidate, String> {
        let identity = self.identity_state(&row)?;
        let exclusion = if row.assignment_status != "active" {
            Some("assignment_paused")
        } else {
            match row.identity_status.as_str() {
                "active" | "refresh_failed" => None,
                "paused" => Some("identity_paused"),
                "reauth_required" => Some("identity_reauth_required"),
                _ => Some("identity_unavailable"),
            }
        };
        Ok(Candidate {
            assignment_id: row.assignment_id,
            identity,
            label: row.label,
            email: row.email,
            plan_type: row.plan_type,
            chatgpt_account_id: row.chatgpt_account_id,
            base_url: trim_base(
                row.base_url
                    .as_deref()
                    .unwrap_or(&self.settings.upstream_base_url),
            ),
            auth_base_url: trim_base(
                row.auth_base_url
                    .as_deref()
                    .unwrap_or(&self.settings.auth_base_url),
            ),
            routable: exclusion.is_none(),
            exclusion,
        })
    }

    fn identity_state(&self, row: &AssignmentRow) -> Result<Arc<IdentityState>, String> {
        let existing = self
            .identities
            .lock()
            .ok()
            .and_then(|map| map.get(&row.identity_id).cloned());
        if let Some(state) = existing {
            if state.credentials().generation < row.credential_generation {
                let secret =
                    self.decrypt(&row.identity_id, &row.secret_ciphertext, &row.secret_nonce)?;
                state.set_credentials(Credentials {
                    secret,
                    generation: row.credential_generation,
                    expires_at: row.access_token_expires_at,
                });
            }
            return Ok(state);
        }
        let secret = self.decrypt(&row.identity_id, &row.secret_ciphertext, &row.secret_nonce)?;
        let state = Arc::new(IdentityState {
            id: row.identity_id.clone(),
            credentials: RwLock::new(Credentials {
                secret,
                generation: row.credential_generation,
                expires_at: row.access_token_expires_at,
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
            exhausted_until: AtomicI64::new(0),
            quota: Mutex::new(HashMap::new()),
        });
        if let Ok(mut map) = self.identities.lock() {
            return Ok(map.entry(row.identity_id.clone()).or_insert(state).clone());
        }
        Ok(state)
    }

    /// Current credentials, refreshed first when the access token is about to expire.
    pub async fn fresh_credentials(
        &self,
        candidate: &Candidate,
    ) -> Result<Credentials, RefreshError> {
        let creds = candidate.identity.credentials();
        let expiring = creds
            .expires_at
            .is_some_and(|exp| exp / 1000 - PROACTIVE_REFRESH_SECS <= self.now_secs());
        if expiring {
            return self.refresh(candidate, creds.generation).await;
        }
        Ok(creds)
    }

    /// Refreshes the identity's tokens unless someone already did since
    /// `seen_generation`. One refresh runs at a time per identity; the rotated
    /// refresh token is stored before anyone uses it.
    pub async fn refresh(
        &self,
        candidate: &Candidate,
        seen_generation: i64,
    ) -> Result<Credentials, RefreshError> {
        let identity = &candidate.identity;
        let _guard = identity.refresh_lock.lock().await;
        let current = identity.credentials();
        if current.generation != seen_generation {
            return Ok(current);
        }
        // Another instance may have rotated the tokens already.
        if let Some(creds) = self
            .adopt_stored_rotation(identity, current.generation)
            .await
        {
            return Ok(creds);
        }
        // Across instances: one refresh per identity at a time, through a lease.
        let lease = format!("refresh:{}", identity.id);
        let mut waited = Duration::ZERO;
        loop {
            let until = now_ms() + REFRESH_LEASE.as_millis() as i64;
            match self
                .store
                .acquire_job_lease(&lease, &self.instance_id, until)
                .await
            {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => break,
            }
            // Another instance is refreshing: take its result when it lands.
            tokio::time::sleep(Duration::from_millis(200)).await;
            waited += Duration::from_millis(200);
            if let Some(creds) = self
                .adopt_stored_rotation(identity, current.generation)
                .await
            {
                return Ok(creds);
            }
            if waited >= REFRESH_LEASE {
                return Err(RefreshError::Transient("refresh_lease_busy".into()));
            }
        }
        // With the lease held, look once more: the previous holder may have
        // finished between our first look and taking the lease.
        if let Some(creds) = self
            .adopt_stored_rotation(identity, current.generation)
            .await
        {
            let _ = self
                .store
                .release_job_lease(&lease, &self.instance_id)
                .await;
            return Ok(creds);
        }
        let result = self
            .call_token_endpoint(candidate, &current.secret.refresh_token)
            .await;
        // The lease is given back only after the outcome is stored, so the
        // next holder sees the rotated tokens.
        let outcome = self
            .store_refresh_outcome(candidate, &current, result)
            .await;
        let _ = self
            .store
            .release_job_lease(&lease, &self.instance_id)
            .await;
        outcome
    }

    /// Takes credentials another writer stored after `generation`, if any.
    async fn adopt_stored_rotation(
        &self,
        identity: &IdentityState,
        generation: i64,
    ) -> Option<Credentials> {
        let (ciphertext, nonce, stored) =
            self.store.load_identity_secret(&identity.id).await.ok()?;
        if stored <= generation {
            return None;
        }
        let secret = self.decrypt(&identity.id, &ciphertext, &nonce).ok()?;
        let expires_at = access_token_expiry_ms(&secret.access_token);
        let creds = Credentials {
            secret,
            generation: stored,
            expires_at,
        };
        identity.set_credentials(creds.clone());
        Some(creds)
    }

    async fn store_refresh_outcome(
        &self,
        candidate: &Candidate,
        current: &Credentials,
        result: Result<UpstreamSecret, RefreshError>,
    ) -> Result<Credentials, RefreshError> {
        let identity = &candidate.identity;
        match result {
            Ok(new_secret) => {
                let expires_at = access_token_expiry_ms(&new_secret.access_token);
                let sealed = self
                    .seal(&identity.id, &new_secret)
                    .map_err(RefreshError::Transient)?;
                let stored = self
                    .store
                    .store_rotated_credentials(
                        &identity.id,
                        current.generation,
                        &sealed,
                        expires_at,
                    )
                    .await
                    .map_err(|_| RefreshError::Transient("refresh_store_failed".into()))?;
                let creds = Credentials {
                    secret: new_secret,
                    generation: current.generation + 1,
                    expires_at,
                };
                if !stored {
                    tracing::warn!(identity = %identity.id, "credentials were rotated concurrently by another writer");
                }
                identity.set_credentials(creds.clone());
                Ok(creds)
            }
            Err(err) => {
                let status = match err {
                    RefreshError::ReauthRequired(_) => "reauth_required",
                    RefreshError::Transient(_) => "refresh_failed",
                };
                if let Err(store_err) = self
                    .store
                    .mark_identity_refresh_failure(&identity.id, status, err.code())
                    .await
                {
                    tracing::error!(error = %store_err, "could not record a refresh failure");
                }
                if let Ok(mut pools) = self.pools.write() {
                    pools.clear();
                }
                Err(err)
            }
        }
    }

    async fn call_token_endpoint(
        &self,
        candidate: &Candidate,
        refresh_token: &str,
    ) -> Result<UpstreamSecret, RefreshError> {
        let url = format!("{}/oauth/token", candidate.auth_base_url);
        let body = serde_json::json!({
            "client_id": crate::proxy::upstream::CODEX_OAUTH_CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        });
        let response = self
            .http
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|_| RefreshError::Transient("refresh_network_error".into()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|_| RefreshError::Transient("refresh_network_error".into()))?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            let text = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let Some(access_token) = text("access_token") else {
                return Err(RefreshError::Transient("refresh_invalid_response".into()));
            };
            let current = candidate.identity.credentials().secret;
            return Ok(UpstreamSecret {
                access_token,
                refresh_token: text("refresh_token").unwrap_or(current.refresh_token),
                id_token: text("id_token").or(current.id_token),
            });
        }
        let code = json
            .pointer("/error/code")
            .and_then(|v| v.as_str())
            .or_else(|| json.get("error").and_then(|v| v.as_str()))
            .map(crate::domain::classify::sanitize_code)
            .unwrap_or_else(|| format!("refresh_http_{}", status.as_u16()));
        const PERMANENT: &[&str] = &[
            "refresh_token_reused",
            "refresh_token_expired",
            "refresh_token_invalidated",
            "invalid_grant",
            "revoked",
            "invalid_refresh_token",
            "token_expired",
        ];
        if PERMANENT.contains(&code.as_str()) || status == reqwest::StatusCode::UNAUTHORIZED {
            Err(RefreshError::ReauthRequired(code))
        } else {
            Err(RefreshError::Transient(code))
        }
    }

    /// Fetches the upstream model catalog through the first routable account of
    /// the Pool and stores it. Returns the number of models.
    pub async fn sync_pool_catalog(&self, pool_id: &str) -> anyhow::Result<usize> {
        let snapshot = self
            .pool(pool_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("Pool not found"))?;
        let mut last_error = anyhow::anyhow!("the Pool has no routable upstream account");
        for candidate in snapshot.candidates.iter().filter(|c| c.routable) {
            match crate::proxy::upstream::fetch_models(self, candidate).await {
                Ok(models) => {
                    let synced: Vec<SyncedModel> = models;
                    self.store.replace_pool_models(pool_id, &synced).await?;
                    if let Ok(mut pools) = self.pools.write() {
                        pools.remove(pool_id);
                    }
                    return Ok(synced.len());
                }
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }
}

/// `exp` of an access token in epoch milliseconds.
pub fn access_token_expiry_ms(access_token: &str) -> Option<i64> {
    decode_claims(access_token)
        .and_then(|c| c.exp)
        .map(|s| s * 1000)
}

fn trim_base(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    trimmed
        .strip_suffix("/backend-api")
        .unwrap_or(trimmed)
        .to_owned()
}
