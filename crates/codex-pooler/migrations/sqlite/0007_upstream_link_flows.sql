-- Device-code links of upstream accounts in progress. The device
-- authorization id is sealed like an account's tokens (bound to the flow id);
-- the user code is shown to the operator and is not a credential by itself.
CREATE TABLE upstream_link_flows (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    operator_id TEXT,
    label TEXT,
    user_code TEXT NOT NULL,
    verification_url TEXT NOT NULL,
    secret_ciphertext BLOB NOT NULL,
    secret_nonce BLOB NOT NULL,
    secret_key_version INTEGER NOT NULL,
    poll_interval_secs INTEGER NOT NULL,
    -- When the gateway last asked the identity provider (gateway clock, ms):
    -- polls come no faster than the provider's interval, whoever asks.
    last_polled_at INTEGER,
    status TEXT NOT NULL,
    identity_id TEXT,
    error_code TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX upstream_link_flows_pool ON upstream_link_flows (pool_id, created_at);
