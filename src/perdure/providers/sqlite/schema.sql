-- perdure schema for SQLite. Times are seconds since the epoch (REAL); payloads are JSON text.

CREATE TABLE IF NOT EXISTS instances (
    instance_id        TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    version            TEXT,
    status             TEXT NOT NULL,
    execution_id       INTEGER NOT NULL,
    input              TEXT,
    output             TEXT,
    error              TEXT,
    custom_status      TEXT,
    parent_instance_id TEXT,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    waiting_for        TEXT  -- JSON: the external events the code waits for (OrchestrationState.waiting_for)
);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances (status, instance_id);
CREATE INDEX IF NOT EXISTS instances_by_name ON instances (name, instance_id);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances (created_at);
CREATE INDEX IF NOT EXISTS instances_by_parent ON instances (parent_instance_id);

CREATE TABLE IF NOT EXISTS history (
    instance_id  TEXT NOT NULL,
    execution_id INTEGER NOT NULL,
    event_id     INTEGER NOT NULL,
    event        TEXT NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
) WITHOUT ROWID;

-- Messages addressed to instances. visible_at in the future makes a message a durable timer.
CREATE TABLE IF NOT EXISTS orchestrator_queue (
    message_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id   TEXT NOT NULL,
    execution_id  INTEGER,
    kind          TEXT NOT NULL,
    event         TEXT NOT NULL,
    visible_at    REAL NOT NULL,
    dequeue_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS orchestrator_queue_by_visible ON orchestrator_queue (visible_at);
CREATE INDEX IF NOT EXISTS orchestrator_queue_by_instance ON orchestrator_queue (instance_id, message_id);

-- The peek-lock on an instance: one turn at a time; an expired lock may be taken over. A lock
-- with a worker_id is that worker's: the worker's beats push locked_until along (see workers).
CREATE TABLE IF NOT EXISTS instance_locks (
    instance_id  TEXT PRIMARY KEY,
    lock_token   TEXT NOT NULL,
    locked_until REAL NOT NULL,
    worker_id    TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS worker_queue (
    item_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    request       TEXT NOT NULL,
    visible_at    REAL NOT NULL,
    lock_token    TEXT,
    dequeue_count INTEGER NOT NULL DEFAULT 0,
    worker_id     TEXT,  -- the worker holding the lock, whose beats push visible_at along
    heartbeat_details TEXT,  -- the last details an attempt reported, for the next attempt
    heartbeat_at  REAL
);
CREATE INDEX IF NOT EXISTS worker_queue_by_visible ON worker_queue (queue, visible_at);
CREATE INDEX IF NOT EXISTS worker_queue_by_instance ON worker_queue (instance_id);

-- One row per running worker process (a Runtime), renewed by a thread of the worker. A worker
-- counts as dead once expires_at has passed; its locks expire at the same moment.
CREATE TABLE IF NOT EXISTS workers (
    worker_id  TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    serves     TEXT NOT NULL,  -- JSON: {"orchestrations": ["name@version"], "activities": [], "queues": []}
    started_at REAL NOT NULL,
    last_seen  REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
