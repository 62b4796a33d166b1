-- Gateway instances (heartbeats) so requests left in progress by a crashed
-- instance can be recognised, and leases so one instance runs each job.
ALTER TABLE requests ADD COLUMN instance_id TEXT;

CREATE TABLE gateway_instances (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at INTEGER
);

CREATE TABLE job_leases (
    job_name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    last_run_at INTEGER
);

CREATE INDEX requests_open_idx ON requests (status, instance_id) WHERE status IN ('accepted', 'in_progress');
