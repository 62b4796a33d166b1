-- Ledger entries gain an amount status (a usage-known settlement that
-- replaces a usage-unknown one voids it), the reservation estimate and the
-- pricing snapshot version that priced them; at most one recorded
-- settlement per request.
ALTER TABLE ledger_entries ADD COLUMN amount_status TEXT NOT NULL DEFAULT 'recorded'
    CHECK (amount_status IN ('recorded', 'voided'));
ALTER TABLE ledger_entries ADD COLUMN estimated_tokens INTEGER;
ALTER TABLE ledger_entries ADD COLUMN pricing_version INTEGER;
CREATE UNIQUE INDEX ledger_entries_one_recorded_settlement ON ledger_entries (request_id)
    WHERE entry_kind = 'settlement' AND amount_status = 'recorded';

-- Usage rollups (metered = went upstream, usage_status other than
-- not_applicable; priced = has a settled cost), kept incrementally as requests finish (bucketed by their
-- admission time) and rebuildable from the request rows. No foreign keys:
-- the totals outlive pruned request rows.
CREATE TABLE usage_hourly (
    pool_id TEXT NOT NULL,
    model TEXT NOT NULL,
    hour_start INTEGER NOT NULL,
    request_count INTEGER NOT NULL DEFAULT 0,
    succeeded_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    rejected_count INTEGER NOT NULL DEFAULT 0,
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    usage_known_count INTEGER NOT NULL DEFAULT 0,
    metered_count INTEGER NOT NULL DEFAULT 0,
    priced_count INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    settled_cost_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pool_id, model, hour_start)
);
CREATE INDEX usage_hourly_hour_idx ON usage_hourly (hour_start);

-- One row per UTC day x Pool x API key x upstream account x model ('' when
-- the request had no key or never reached an account): daily totals per Pool,
-- key, account or model are sums over it.
CREATE TABLE usage_daily (
    day_start INTEGER NOT NULL,
    pool_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    model TEXT NOT NULL,
    request_count INTEGER NOT NULL DEFAULT 0,
    succeeded_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    rejected_count INTEGER NOT NULL DEFAULT 0,
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    usage_known_count INTEGER NOT NULL DEFAULT 0,
    metered_count INTEGER NOT NULL DEFAULT 0,
    priced_count INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    settled_cost_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day_start, pool_id, api_key_id, identity_id, model)
);
CREATE INDEX usage_daily_key_idx ON usage_daily (api_key_id, day_start);
CREATE INDEX usage_daily_identity_idx ON usage_daily (identity_id, day_start);

-- Imported price tables, newest version wins. The bundled table is imported
-- on first start; the pricing import command adds newer ones.
CREATE TABLE pricing_snapshots (
    version INTEGER PRIMARY KEY,
    content_sha256 TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    generated_at TEXT,
    model_count INTEGER NOT NULL,
    content TEXT NOT NULL,
    imported_at INTEGER NOT NULL
);

-- Request-log filters at millions of rows: model and client request id get
-- their own indexes; id fragments are found through a trigram index of the
-- row id and the client's request id (FTS5, kept by triggers; neither
-- column ever changes after the insert).
CREATE INDEX requests_model_admitted_idx ON requests (requested_model, admitted_at DESC, id DESC);
CREATE INDEX requests_client_request_idx ON requests (client_request_id);
CREATE VIRTUAL TABLE request_id_search USING fts5(
    id, client_request_id, content = 'requests', content_rowid = 'rowid', tokenize = 'trigram'
);
INSERT INTO request_id_search (rowid, id, client_request_id) SELECT rowid, id, client_request_id FROM requests;
CREATE TRIGGER requests_id_search_insert AFTER INSERT ON requests BEGIN
    INSERT INTO request_id_search (rowid, id, client_request_id) VALUES (new.rowid, new.id, new.client_request_id);
END;
CREATE TRIGGER requests_id_search_delete AFTER DELETE ON requests BEGIN
    INSERT INTO request_id_search (request_id_search, rowid, id, client_request_id)
    VALUES ('delete', old.rowid, old.id, old.client_request_id);
END;
