-- Admin console: sign-in sessions (only the SHA-256 of the cookie token is
-- stored), one-time bootstrap tokens for creating the first owner, and the
-- Pools an admin operator is assigned to. Times are epoch milliseconds.

CREATE TABLE admin_sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT,
    ip TEXT,
    user_agent TEXT
);
CREATE INDEX admin_sessions_operator_idx ON admin_sessions (operator_id, created_at DESC);

CREATE TABLE bootstrap_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE operator_pools (
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    pool_id TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (operator_id, pool_id)
);
CREATE INDEX operator_pools_pool_idx ON operator_pools (pool_id);

CREATE INDEX audit_events_action_occurred_idx ON audit_events (action, occurred_at DESC, id DESC);
CREATE INDEX audit_events_pool_occurred_idx ON audit_events (pool_id, occurred_at DESC, id DESC);
