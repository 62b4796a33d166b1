-- Operator security: an optional TOTP second factor, its one-time recovery
-- codes, and the short-lived sign-ins waiting for that second factor.
-- Secrets are sealed by the gateway's secret box with the operator id in the
-- associated data; recovery codes and challenge tokens are stored as SHA-256
-- only. Times are epoch milliseconds.

-- One row per operator who started or finished enrolment; `enabled_at` is
-- NULL while the setup waits for its first code. `last_used_step` is the
-- newest 30-second step whose code was accepted, so a code works once.
CREATE TABLE operator_totp (
    operator_id TEXT PRIMARY KEY REFERENCES operators(id) ON DELETE CASCADE,
    secret_ciphertext BLOB NOT NULL,
    secret_nonce BLOB NOT NULL,
    key_version INTEGER NOT NULL,
    enabled_at INTEGER,
    last_used_step INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE operator_recovery_codes (
    id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    used_at INTEGER,
    UNIQUE (operator_id, code_hash)
);

-- A correct email and password of an operator with TOTP on: the browser holds
-- the raw token (cookie `cxp_login`) until the code is entered. Each code
-- entered takes one of five attempts first (atomically, so parallel guesses
-- count too); then the password must be entered again. Spent challenges are
-- kept for 15 minutes: an operator with ten wrong codes in that time gets no
-- new challenge until they age out.
CREATE TABLE login_challenges (
    token_hash TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    ip TEXT,
    user_agent TEXT
);
CREATE INDEX login_challenges_operator_idx ON login_challenges (operator_id);
CREATE INDEX login_challenges_expires_idx ON login_challenges (expires_at);
