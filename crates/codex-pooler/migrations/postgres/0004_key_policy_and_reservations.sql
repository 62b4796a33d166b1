-- API key policy (reasoning effort and service tier enforcement, limits) and
-- per-key reservations that limits are checked against.
ALTER TABLE api_keys ADD COLUMN enforced_reasoning_effort TEXT;
ALTER TABLE api_keys ADD COLUMN maximum_reasoning_effort TEXT;
ALTER TABLE api_keys ADD COLUMN enforced_service_tier TEXT;
ALTER TABLE api_keys ADD COLUMN max_requests_per_minute BIGINT;
ALTER TABLE api_keys ADD COLUMN max_tokens_per_day BIGINT;
ALTER TABLE api_keys ADD COLUMN max_tokens_per_week BIGINT;
ALTER TABLE api_keys ADD COLUMN max_input_tokens_per_request BIGINT;
ALTER TABLE api_keys ADD COLUMN max_output_tokens_per_request BIGINT;
ALTER TABLE api_keys ADD COLUMN max_spend_micros_per_day BIGINT;
ALTER TABLE api_keys ADD COLUMN max_spend_micros_per_week BIGINT;
ALTER TABLE api_keys ADD COLUMN max_spend_micros_per_month BIGINT;

CREATE TABLE key_reservations (
    request_id TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    reserved_at BIGINT NOT NULL,
    estimated_tokens BIGINT NOT NULL,
    estimated_cost_micros BIGINT NOT NULL,
    settled_tokens BIGINT,
    settled_cost_micros BIGINT,
    hour_start BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'settled', 'released'))
);

-- Per-key hourly totals (reserved, then corrected at settlement) that the
-- token and spend windows are summed from: at most a few hundred rows per check.
CREATE TABLE key_usage_hours (
    api_key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    hour_start BIGINT NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0,
    cost_micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, hour_start)
);
CREATE INDEX key_reservations_key_time_idx ON key_reservations (api_key_id, reserved_at);
