-- The canonical perdure schema for PostgreSQL: what applying every migration in migrations/ produces
-- (a test checks it). Runs with search_path set to the tenant's schema. Times are timestamptz and
-- every lock and visibility check uses the database clock (now()), so hosts with skewed clocks agree.
-- Payloads are JSON text.

CREATE TABLE instances (
    instance_id        text PRIMARY KEY,
    name               text NOT NULL,
    version            text,
    status             text NOT NULL,
    execution_id       integer NOT NULL,
    input              text,
    output             text,
    error              text,
    custom_status      text,
    parent_instance_id text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    waiting_for        text  -- JSON: the external events the code waits for (OrchestrationState.waiting_for)
);
CREATE INDEX instances_by_status ON instances (status, instance_id);
CREATE INDEX instances_by_name ON instances (name, instance_id);
CREATE INDEX instances_by_created ON instances (created_at);
CREATE INDEX instances_by_parent ON instances (parent_instance_id);

CREATE TABLE history (
    instance_id  text NOT NULL,
    execution_id integer NOT NULL,
    event_id     integer NOT NULL,
    event        text NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
);

-- Messages addressed to instances. visible_at in the future makes a message a durable timer.
CREATE TABLE orchestrator_queue (
    message_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id   text NOT NULL,
    execution_id  integer,
    kind          text NOT NULL,  -- 'control' (reaches a suspended instance) or 'message'
    event         text NOT NULL,
    visible_at    timestamptz NOT NULL,
    dequeue_count integer NOT NULL DEFAULT 0
);
CREATE INDEX orchestrator_queue_by_visible ON orchestrator_queue (visible_at, message_id);
CREATE INDEX orchestrator_queue_by_instance ON orchestrator_queue (instance_id, message_id);

-- The peek-lock on an instance: one turn at a time across all hosts; an expired lock is taken over.
CREATE TABLE instance_locks (
    instance_id  text PRIMARY KEY,
    lock_token   text NOT NULL,
    locked_until timestamptz NOT NULL,
    worker_id    text  -- the worker holding the lock, whose beats push locked_until along
);

CREATE TABLE worker_queue (
    item_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue         text NOT NULL,
    instance_id   text NOT NULL,
    request       text NOT NULL,
    visible_at    timestamptz NOT NULL,
    lock_token    text,
    dequeue_count integer NOT NULL DEFAULT 0,
    worker_id     text,  -- the worker holding the lock, whose beats push visible_at along
    heartbeat_details text,  -- the last details an attempt reported, for the next attempt
    heartbeat_at  timestamptz
);
CREATE INDEX worker_queue_by_visible ON worker_queue (queue, visible_at, item_id);
CREATE INDEX worker_queue_by_instance ON worker_queue (instance_id);

-- Enqueue orchestrator messages, first creating (PENDING) each instance of the p_start_* arrays
-- that does not exist yet. p_notify, when given, wakes listeners in other processes.
CREATE FUNCTION enqueue_messages(
    p_instances text[], p_executions integer[], p_kinds text[], p_events text[], p_visible timestamptz[],
    p_start_instances text[], p_start_names text[], p_start_inputs text[], p_start_parents text[],
    p_notify text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_start_instances) > 0 THEN
        INSERT INTO instances (instance_id, name, status, execution_id, input, parent_instance_id, created_at, updated_at)
        SELECT s.instance_id, s.name, 'PENDING', 1, s.input, s.parent, now(), now()
        FROM unnest(p_start_instances, p_start_names, p_start_inputs, p_start_parents) AS s(instance_id, name, input, parent)
        ON CONFLICT (instance_id) DO NOTHING;
    END IF;
    IF cardinality(p_instances) > 0 THEN
        INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)
        SELECT m.instance_id, m.execution_id, m.kind, m.event, coalesce(m.visible_at, now())
        FROM unnest(p_instances, p_executions, p_kinds, p_events, p_visible)
            WITH ORDINALITY AS m(instance_id, execution_id, kind, event, visible_at, n)
        ORDER BY m.n;
    END IF;
    IF p_notify IS NOT NULL THEN
        PERFORM pg_notify(notify_channel(), p_notify);
    END IF;
END
$$;

-- The LISTEN/NOTIFY channel of this schema.
CREATE FUNCTION notify_channel() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT left('perdure_' || current_schema(), 63)
$$;

-- Lock one instance that has visible messages (no live lock, not held back by suspension) and
-- return it with its messages, state and current history, in one round trip. Candidates are
-- tried in queue order; an advisory lock skips instances another fetch is taking right now. With
-- p_worker_id the lock is that worker's, extended by its beats (worker_beat). With p_tail_over, a
-- history longer than that many events comes back as its last event only (o_history_from is its
-- id): a caller with an execution cache most likely holds the rest, and reads it if not.
CREATE FUNCTION fetch_orchestration_item(
    p_lock_seconds double precision, p_token text, p_worker_id text DEFAULT NULL, p_tail_over integer DEFAULT NULL
)
RETURNS TABLE (
    o_instance_id text, o_message_ids bigint[], o_message_executions integer[], o_message_events text[],
    o_message_dequeues integer[], o_state_instance_id text, o_name text, o_version text, o_status text,
    o_execution_id integer, o_input text, o_output text, o_error text, o_custom_status text,
    o_parent_instance_id text, o_created_at timestamptz, o_updated_at timestamptz, o_history text[],
    o_history_from integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_id text;
    v_tried text[] := '{}';
    v_locked boolean;
BEGIN
    FOR v_id IN
        SELECT q.instance_id FROM orchestrator_queue q
        WHERE q.visible_at <= now()
          AND NOT EXISTS (SELECT 1 FROM instance_locks l WHERE l.instance_id = q.instance_id AND l.locked_until > now())
          AND (q.kind = 'control'
               OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = q.instance_id AND i.status = 'SUSPENDED'))
        ORDER BY q.visible_at, q.message_id
        LIMIT 64
    LOOP
        CONTINUE WHEN v_id = ANY (v_tried);
        v_tried := v_tried || v_id;
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(hashtext(current_schema()), hashtext(v_id));
        v_locked := NULL;
        INSERT INTO instance_locks AS l (instance_id, lock_token, locked_until, worker_id)
        VALUES (v_id, p_token, now() + make_interval(secs => p_lock_seconds), p_worker_id)
        ON CONFLICT (instance_id) DO UPDATE
            SET lock_token = excluded.lock_token, locked_until = excluded.locked_until, worker_id = excluded.worker_id
            WHERE l.locked_until <= now()
        RETURNING true INTO v_locked;
        CONTINUE WHEN v_locked IS NULL;
        RETURN QUERY
        WITH m AS (
            UPDATE orchestrator_queue q SET dequeue_count = q.dequeue_count + 1
            WHERE q.instance_id = v_id AND q.visible_at <= now()
            RETURNING q.message_id, q.execution_id, q.event, q.dequeue_count
        ), agg AS (
            SELECT array_agg(m.message_id ORDER BY m.message_id) AS ids,
                   array_agg(m.execution_id ORDER BY m.message_id) AS executions,
                   array_agg(m.event ORDER BY m.message_id) AS events,
                   array_agg(m.dequeue_count ORDER BY m.message_id) AS dequeues
            FROM m
        )
        SELECT v_id, agg.ids, agg.executions, agg.events, agg.dequeues, i.instance_id, i.name, i.version, i.status,
               i.execution_id, i.input, i.output, i.error, i.custom_status, i.parent_instance_id, i.created_at,
               i.updated_at,
               (SELECT array_agg(h.event ORDER BY h.event_id) FROM history h
                WHERE h.instance_id = v_id AND h.execution_id = i.execution_id AND h.event_id >= f.first),
               f.first
        FROM agg LEFT JOIN instances i ON i.instance_id = v_id
        LEFT JOIN LATERAL (
            SELECT CASE WHEN max(h.event_id) > p_tail_over THEN max(h.event_id) ELSE 1 END AS first
            FROM history h WHERE h.instance_id = v_id AND h.execution_id = i.execution_id
        ) f ON true;
        RETURN;
    END LOOP;
END
$$;

-- Lock the instance p_instance_id exactly as fetch_orchestration_item locks the next fetchable one
-- (visible messages, no live lock, not held back by suspension; an advisory try-lock skips it while
-- another fetch is taking it) and return it the same way; no row if a fetch could not take it now,
-- or if work items of the instance are still queued or running: more completions are coming (a
-- fan-out), and the fetch that comes a little later takes those that arrive together in one turn.
-- A write that queues a message for the instance calls it in its own transaction (eager dispatch).
CREATE FUNCTION claim_orchestration_item(
    p_instance_id text, p_lock_seconds double precision, p_token text, p_worker_id text, p_tail_over integer
)
RETURNS TABLE (
    o_instance_id text, o_message_ids bigint[], o_message_executions integer[], o_message_events text[],
    o_message_dequeues integer[], o_state_instance_id text, o_name text, o_version text, o_status text,
    o_execution_id integer, o_input text, o_output text, o_error text, o_custom_status text,
    o_parent_instance_id text, o_created_at timestamptz, o_updated_at timestamptz, o_history text[],
    o_history_from integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_locked boolean;
    -- A retry of a call whose first attempt committed (its answer lost with the connection) finds
    -- the lock its own: it returns the item again, without counting the delivery twice.
    v_again boolean := EXISTS (SELECT 1 FROM instance_locks WHERE instance_id = p_instance_id AND lock_token = p_token);
BEGIN
    IF NOT v_again THEN
        PERFORM 1 FROM orchestrator_queue q
        WHERE q.instance_id = p_instance_id AND q.visible_at <= now()
          AND NOT EXISTS (SELECT 1 FROM instance_locks l WHERE l.instance_id = q.instance_id AND l.locked_until > now())
          AND (q.kind = 'control'
               OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = q.instance_id AND i.status = 'SUSPENDED'))
          AND NOT EXISTS (SELECT 1 FROM worker_queue w WHERE w.instance_id = p_instance_id)
        LIMIT 1;
        IF NOT FOUND OR NOT pg_try_advisory_xact_lock(hashtext(current_schema()), hashtext(p_instance_id)) THEN
            RETURN;
        END IF;
        INSERT INTO instance_locks AS l (instance_id, lock_token, locked_until, worker_id)
        VALUES (p_instance_id, p_token, now() + make_interval(secs => p_lock_seconds), p_worker_id)
        ON CONFLICT (instance_id) DO UPDATE
            SET lock_token = excluded.lock_token, locked_until = excluded.locked_until, worker_id = excluded.worker_id
            WHERE l.locked_until <= now()
        RETURNING true INTO v_locked;
        IF v_locked IS NULL THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    WITH m AS (
        UPDATE orchestrator_queue q SET dequeue_count = q.dequeue_count + CASE WHEN v_again THEN 0 ELSE 1 END
        WHERE q.instance_id = p_instance_id AND q.visible_at <= now()
        RETURNING q.message_id, q.execution_id, q.event, q.dequeue_count
    ), agg AS (
        SELECT array_agg(m.message_id ORDER BY m.message_id) AS ids,
               array_agg(m.execution_id ORDER BY m.message_id) AS executions,
               array_agg(m.event ORDER BY m.message_id) AS events,
               array_agg(m.dequeue_count ORDER BY m.message_id) AS dequeues
        FROM m
    )
    SELECT p_instance_id, agg.ids, agg.executions, agg.events, agg.dequeues, i.instance_id, i.name, i.version,
           i.status, i.execution_id, i.input, i.output, i.error, i.custom_status, i.parent_instance_id, i.created_at,
           i.updated_at,
           (SELECT array_agg(h.event ORDER BY h.event_id) FROM history h
            WHERE h.instance_id = p_instance_id AND h.execution_id = i.execution_id AND h.event_id >= f.first),
           f.first
    FROM agg LEFT JOIN instances i ON i.instance_id = p_instance_id
    LEFT JOIN LATERAL (
        SELECT CASE WHEN max(h.event_id) > p_tail_over THEN max(h.event_id) ELSE 1 END AS first
        FROM history h WHERE h.instance_id = p_instance_id AND h.execution_id = i.execution_id
    ) f ON true;
END
$$;

-- Commit a turn and release the instance lock, atomically. Returns false, writing nothing, when
-- the lock is no longer held with p_lock_token (it expired and was taken over). Of the new work
-- items in p_claim_queues, the first p_claim_count are inserted locked with p_claim_token for
-- p_claim_seconds (held by p_claim_worker), as a fetch would lock them, and come back as arrays.
-- With p_set_state, the instance row's times come back too: the writer then knows the whole row.
CREATE FUNCTION ack_orchestration_item(
    p_instance_id text, p_lock_token text, p_execution_id integer,
    p_event_ids integer[], p_events text[],
    p_work_queues text[], p_work_requests text[],
    p_instances text[], p_executions integer[], p_kinds text[], p_msg_events text[], p_visible timestamptz[],
    p_start_instances text[], p_start_names text[], p_start_inputs text[], p_start_parents text[],
    p_set_state boolean, p_name text, p_version text, p_status text, p_state_execution_id integer,
    p_input text, p_output text, p_error text, p_custom_status text, p_parent_instance_id text,
    p_consumed bigint[], p_notify text, p_waiting_for text,
    p_claim_queues text[], p_claim_count integer, p_claim_token text, p_claim_seconds double precision,
    p_claim_worker text,
    OUT o_committed boolean, OUT o_claimed_ids bigint[], OUT o_claimed_requests text[],
    OUT o_created_at timestamptz, OUT o_updated_at timestamptz
) LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM instance_locks WHERE instance_id = p_instance_id AND lock_token = p_lock_token;
    IF NOT FOUND THEN
        o_committed := false;
        RETURN;
    END IF;
    IF cardinality(p_event_ids) > 0 THEN
        INSERT INTO history (instance_id, execution_id, event_id, event)
        SELECT p_instance_id, p_execution_id, e.event_id, e.event FROM unnest(p_event_ids, p_events) AS e(event_id, event);
    END IF;
    IF cardinality(p_work_queues) > 0 THEN
        WITH new AS (
            SELECT w.queue, w.request, w.n,
                   coalesce(p_claim_count > 0 AND w.queue = ANY (p_claim_queues), false) AS eligible
            FROM unnest(p_work_queues, p_work_requests) WITH ORDINALITY AS w(queue, request, n)
        ), ranked AS (
            SELECT new.*, eligible AND count(*) FILTER (WHERE eligible) OVER (ORDER BY n) <= p_claim_count AS claim
            FROM new
        ), inserted AS (
            INSERT INTO worker_queue (queue, instance_id, request, visible_at, lock_token, dequeue_count, worker_id)
            SELECT r.queue, p_instance_id, r.request,
                   CASE WHEN r.claim THEN now() + make_interval(secs => p_claim_seconds) ELSE now() END,
                   CASE WHEN r.claim THEN p_claim_token END, CASE WHEN r.claim THEN 1 ELSE 0 END,
                   CASE WHEN r.claim THEN p_claim_worker END
            FROM ranked r ORDER BY r.n
            RETURNING item_id, request, lock_token IS NOT NULL AS claimed
        )
        SELECT array_agg(i.item_id ORDER BY i.item_id) FILTER (WHERE i.claimed),
               array_agg(i.request ORDER BY i.item_id) FILTER (WHERE i.claimed)
        INTO o_claimed_ids, o_claimed_requests
        FROM inserted i;
    END IF;
    PERFORM enqueue_messages(p_instances, p_executions, p_kinds, p_msg_events, p_visible,
                             p_start_instances, p_start_names, p_start_inputs, p_start_parents, p_notify);
    IF p_set_state THEN
        UPDATE instances SET name = p_name, version = p_version, status = p_status, execution_id = p_state_execution_id,
            input = p_input, output = p_output, error = p_error, custom_status = p_custom_status,
            parent_instance_id = p_parent_instance_id, updated_at = now(), waiting_for = p_waiting_for
        WHERE instance_id = p_instance_id
        RETURNING created_at, updated_at INTO o_created_at, o_updated_at;
    END IF;
    IF cardinality(p_consumed) > 0 THEN
        DELETE FROM orchestrator_queue WHERE message_id = ANY (p_consumed);
    END IF;
    -- Messages the turn left queued (held back while suspended) start counting afresh.
    UPDATE orchestrator_queue SET dequeue_count = 0 WHERE instance_id = p_instance_id AND dequeue_count > 0;
    o_committed := true;
END
$$;

-- The previous signature, for callers of an earlier release: the same commit, claiming nothing.
CREATE FUNCTION ack_orchestration_item(
    p_instance_id text, p_lock_token text, p_execution_id integer,
    p_event_ids integer[], p_events text[],
    p_work_queues text[], p_work_requests text[],
    p_instances text[], p_executions integer[], p_kinds text[], p_msg_events text[], p_visible timestamptz[],
    p_start_instances text[], p_start_names text[], p_start_inputs text[], p_start_parents text[],
    p_set_state boolean, p_name text, p_version text, p_status text, p_state_execution_id integer,
    p_input text, p_output text, p_error text, p_custom_status text, p_parent_instance_id text,
    p_consumed bigint[], p_notify text, p_waiting_for text DEFAULT NULL
) RETURNS boolean LANGUAGE sql AS $$
    SELECT a.o_committed FROM ack_orchestration_item(
        p_instance_id, p_lock_token, p_execution_id, p_event_ids, p_events, p_work_queues, p_work_requests,
        p_instances, p_executions, p_kinds, p_msg_events, p_visible,
        p_start_instances, p_start_names, p_start_inputs, p_start_parents,
        p_set_state, p_name, p_version, p_status, p_state_execution_id,
        p_input, p_output, p_error, p_custom_status, p_parent_instance_id,
        p_consumed, p_notify, p_waiting_for, NULL, 0, NULL, NULL, NULL
    ) a
$$;

-- Receipts of enqueue calls: a call retried after its reply was lost (the commit happened, the
-- connection died before the answer) finds its receipt and is not applied twice.
CREATE TABLE enqueue_receipts (
    key        text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enqueue_receipts_by_created ON enqueue_receipts (created_at);

-- One row per running worker process (a Runtime), renewed by a thread of the worker through
-- worker_beat. A worker counts as dead once expires_at has passed; its locks expire then too.
CREATE TABLE workers (
    worker_id  text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    serves     text NOT NULL,  -- JSON: {"orchestrations": ["name@version"], "activities": [], "queues": []}
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX instance_locks_by_worker ON instance_locks (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX worker_queue_by_worker ON worker_queue (worker_id) WHERE worker_id IS NOT NULL;

-- A worker's beat, from its liveness thread: its record (created if missing) seen now, its running
-- activities' heartbeats stored (details NULL keeps the stored details and records only the time),
-- and every lock it holds extended to its new expiry, except rows another transaction has locked
-- (being acked, released or renewed right now): waiting for them could deadlock with a batch that
-- locks the same rows in another order, and the next beat extends them. Records dead for a day are
-- swept.
CREATE FUNCTION worker_beat(
    p_worker_id text, p_host text, p_pid integer, p_serves text, p_started_at timestamptz,
    p_timeout double precision, p_items bigint[], p_tokens text[], p_details text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_expires timestamptz := now() + make_interval(secs => p_timeout);
BEGIN
    INSERT INTO workers (worker_id, host, pid, serves, started_at, last_seen, expires_at)
    VALUES (p_worker_id, p_host, p_pid, p_serves, p_started_at, now(), v_expires)
    ON CONFLICT (worker_id) DO UPDATE SET last_seen = excluded.last_seen, expires_at = excluded.expires_at;
    IF cardinality(p_items) > 0 THEN
        UPDATE worker_queue w SET heartbeat_details = coalesce(h.details, w.heartbeat_details), heartbeat_at = now()
        FROM unnest(p_items, p_tokens, p_details) AS h(item_id, lock_token, details)
        WHERE w.item_id = h.item_id AND w.lock_token = h.lock_token;
    END IF;
    UPDATE instance_locks l SET locked_until = v_expires
    FROM (SELECT instance_id FROM instance_locks WHERE worker_id = p_worker_id FOR UPDATE SKIP LOCKED) s
    WHERE l.instance_id = s.instance_id;
    UPDATE worker_queue w SET visible_at = v_expires
    FROM (SELECT item_id FROM worker_queue WHERE worker_id = p_worker_id FOR UPDATE SKIP LOCKED) s
    WHERE w.item_id = s.item_id;
    DELETE FROM workers WHERE expires_at < now() - interval '1 day';
END
$$;
