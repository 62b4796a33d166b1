-- Initial schema. Times are epoch milliseconds (INTEGER), ids are TEXT (UUIDv7),
-- JSON is TEXT, ciphertext is BLOB. The SQLite twin of this file differs only in types.

CREATE TABLE operators (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE operator_tokens (
    id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    token_prefix TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);

CREATE TABLE pools (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'archived')),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE pool_routing_settings (
    pool_id TEXT PRIMARY KEY REFERENCES pools(id) ON DELETE CASCADE,
    routing_strategy TEXT NOT NULL DEFAULT 'bridge_ring',
    bridge_ring_size INTEGER NOT NULL DEFAULT 3 CHECK (bridge_ring_size >= 1),
    sticky_websocket_sessions BOOLEAN NOT NULL DEFAULT TRUE,
    sticky_http_sessions BOOLEAN NOT NULL DEFAULT FALSE,
    prompt_cache_affinity_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    v1_compatibility_enabled BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at INTEGER NOT NULL
);

CREATE TABLE upstream_identities (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    email TEXT,
    chatgpt_account_id TEXT NOT NULL,
    chatgpt_user_id TEXT,
    plan_type TEXT,
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'refresh_failed', 'reauth_required')),
    base_url TEXT,
    auth_base_url TEXT,
    secret_ciphertext BLOB NOT NULL,
    secret_nonce BLOB NOT NULL,
    secret_key_version INTEGER NOT NULL,
    credential_generation INTEGER NOT NULL DEFAULT 0,
    access_token_expires_at INTEGER,
    last_refresh_at INTEGER,
    last_refresh_error_code TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX upstream_identities_account_user_uq
    ON upstream_identities (chatgpt_account_id, COALESCE(chatgpt_user_id, ''));

CREATE TABLE pool_assignments (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    identity_id TEXT NOT NULL REFERENCES upstream_identities(id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at INTEGER NOT NULL,
    UNIQUE (pool_id, identity_id)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    key_prefix TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'revoked')),
    expires_at INTEGER,
    allowed_models TEXT,
    enforced_model TEXT,
    last_used_at INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE pool_models (
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    display_name TEXT,
    context_window INTEGER,
    raw_json TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (pool_id, slug)
);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL UNIQUE,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    api_key_id TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    api_key_prefix TEXT,
    api_key_label TEXT,
    endpoint TEXT NOT NULL,
    transport TEXT NOT NULL
        CHECK (transport IN ('http_json', 'http_compact_json', 'http_sse', 'websocket', 'http_multipart')),
    status TEXT NOT NULL
        CHECK (status IN ('accepted', 'in_progress', 'succeeded', 'failed', 'rejected', 'cancelled')),
    usage_status TEXT NOT NULL
        CHECK (usage_status IN ('usage_pending', 'usage_known', 'usage_unknown', 'not_applicable')),
    requested_model TEXT NOT NULL,
    reasoning_effort TEXT,
    service_tier TEXT,
    admitted_at INTEGER NOT NULL,
    completed_at INTEGER,
    routing_ms INTEGER,
    upstream_ms INTEGER,
    first_byte_ms INTEGER,
    total_ms INTEGER,
    response_status_code INTEGER,
    retry_count INTEGER NOT NULL DEFAULT 0,
    last_error_code TEXT,
    upstream_identity_id TEXT,
    upstream_account_label TEXT,
    upstream_account_email TEXT,
    upstream_account_plan TEXT,
    input_tokens INTEGER,
    cached_input_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    total_tokens INTEGER,
    estimated_cost_micros INTEGER,
    settled_cost_micros INTEGER,
    pricing_status TEXT,
    client_request_id TEXT,
    user_agent TEXT,
    request_metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX requests_admitted_id_idx ON requests (admitted_at DESC, id DESC);
CREATE INDEX requests_pool_admitted_idx ON requests (pool_id, admitted_at DESC, id DESC);
CREATE INDEX requests_status_admitted_idx ON requests (status, admitted_at DESC, id DESC);
CREATE INDEX requests_api_key_admitted_idx ON requests (api_key_id, admitted_at DESC, id DESC);
CREATE INDEX requests_identity_admitted_idx ON requests (upstream_identity_id, admitted_at DESC, id DESC);

CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
    attempt_number INTEGER NOT NULL CHECK (attempt_number > 0),
    assignment_id TEXT,
    identity_id TEXT,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'in_progress', 'succeeded', 'failed', 'retryable_failed', 'cancelled')),
    upstream_status_code INTEGER,
    retryable BOOLEAN NOT NULL DEFAULT FALSE,
    error_code TEXT,
    error_message TEXT,
    upstream_request_id TEXT,
    started_at INTEGER NOT NULL,
    completed_at INTEGER,
    latency_ms INTEGER,
    UNIQUE (request_id, attempt_number)
);

CREATE TABLE ledger_entries (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
    entry_kind TEXT NOT NULL CHECK (entry_kind IN ('reservation', 'release', 'settlement', 'adjustment', 'correction')),
    source_event_id TEXT NOT NULL UNIQUE,
    usage_status TEXT NOT NULL,
    input_tokens INTEGER,
    cached_input_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    total_tokens INTEGER,
    estimated_cost_micros INTEGER,
    settled_cost_micros INTEGER,
    pricing_status TEXT,
    occurred_at INTEGER NOT NULL
);
CREATE INDEX ledger_entries_request_idx ON ledger_entries (request_id);

CREATE TABLE quota_windows (
    identity_id TEXT NOT NULL REFERENCES upstream_identities(id) ON DELETE CASCADE,
    window_kind TEXT NOT NULL,
    used_percent REAL NOT NULL,
    window_minutes INTEGER,
    reset_at INTEGER,
    source TEXT NOT NULL,
    observed_at INTEGER NOT NULL,
    PRIMARY KEY (identity_id, window_kind)
);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    occurred_at INTEGER NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    actor_label TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT,
    pool_id TEXT,
    outcome TEXT NOT NULL,
    ip TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_occurred_idx ON audit_events (occurred_at DESC, id DESC);
