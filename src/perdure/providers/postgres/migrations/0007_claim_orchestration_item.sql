-- Eager orchestration dispatch: a write that queues a message for an instance (an activity's ack,
-- a start) may lock that instance in the same transaction for an idle orchestration loop of the
-- writing process, so the loop's turn starts without a fetch of its own.

-- Lock the instance p_instance_id exactly as fetch_orchestration_item locks the next fetchable one
-- (visible messages, no live lock, not held back by suspension; an advisory try-lock skips it while
-- another fetch is taking it) and return it the same way; no row if a fetch could not take it now,
-- or if work items of the instance are still queued or running: more completions are coming (a
-- fan-out), and the fetch that comes a little later takes those that arrive together in one turn.
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
