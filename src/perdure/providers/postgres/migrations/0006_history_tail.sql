-- The orchestration fetch can return only the tail of a long history, for workers with an
-- execution cache. Older callers pass three arguments; the default keeps them working during a
-- rolling deploy.
DROP FUNCTION fetch_orchestration_item(double precision, text, text);

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
