-- Worker records: a lock fetched by a worker carries its id and lives as long as the worker's
-- record, renewed by a thread of the worker (worker_beat), not by its event loop. Work items keep
-- the last heartbeat of the activity running them, for the next attempt. Locks without a worker
-- id (written before this version, or by a provider user without a record) expire on their own.
ALTER TABLE instance_locks ADD COLUMN worker_id text;
ALTER TABLE worker_queue ADD COLUMN worker_id text;
ALTER TABLE worker_queue ADD COLUMN heartbeat_details text;
ALTER TABLE worker_queue ADD COLUMN heartbeat_at timestamptz;

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

-- A worker's beat, from its liveness thread: its record (created if missing) seen now, every lock
-- it holds extended to its new expiry, and its running activities' heartbeats stored (details
-- NULL keeps the stored details and records only the time). Records dead for a day are swept.
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
    UPDATE instance_locks SET locked_until = v_expires WHERE worker_id = p_worker_id;
    UPDATE worker_queue SET visible_at = v_expires WHERE worker_id = p_worker_id;
    IF cardinality(p_items) > 0 THEN
        UPDATE worker_queue w SET heartbeat_details = coalesce(h.details, w.heartbeat_details), heartbeat_at = now()
        FROM unnest(p_items, p_tokens, p_details) AS h(item_id, lock_token, details)
        WHERE w.item_id = h.item_id AND w.lock_token = h.lock_token;
    END IF;
    DELETE FROM workers WHERE expires_at < now() - interval '1 day';
END
$$;

-- Older callers pass two arguments; the default keeps them working during a rolling deploy.
DROP FUNCTION fetch_orchestration_item(double precision, text);

-- Lock one instance that has visible messages (no live lock, not held back by suspension) and
-- return it with its messages, state and current history, in one round trip. Candidates are
-- tried in queue order; an advisory lock skips instances another fetch is taking right now. With
-- p_worker_id the lock is that worker's, extended by its beats (worker_beat).
CREATE FUNCTION fetch_orchestration_item(p_lock_seconds double precision, p_token text, p_worker_id text DEFAULT NULL)
RETURNS TABLE (
    o_instance_id text, o_message_ids bigint[], o_message_executions integer[], o_message_events text[],
    o_message_dequeues integer[], o_state_instance_id text, o_name text, o_version text, o_status text,
    o_execution_id integer, o_input text, o_output text, o_error text, o_custom_status text,
    o_parent_instance_id text, o_created_at timestamptz, o_updated_at timestamptz, o_history text[]
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
                WHERE h.instance_id = v_id AND h.execution_id = i.execution_id)
        FROM agg LEFT JOIN instances i ON i.instance_id = v_id;
        RETURN;
    END LOOP;
END
$$;
