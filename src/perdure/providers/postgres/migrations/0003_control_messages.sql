-- A message now says itself whether it reaches a suspended instance (kind 'control'); the
-- provider no longer knows which event types those are. Messages queued before this version
-- stored their event type as the kind: the ones of those types become 'control'.
UPDATE orchestrator_queue SET kind = 'control'
WHERE kind IN ('OrchestrationResumed', 'OrchestrationSuspended', 'TerminateRequested');

CREATE OR REPLACE FUNCTION fetch_orchestration_item(p_lock_seconds double precision, p_token text)
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
        INSERT INTO instance_locks AS l (instance_id, lock_token, locked_until)
        VALUES (v_id, p_token, now() + make_interval(secs => p_lock_seconds))
        ON CONFLICT (instance_id) DO UPDATE SET lock_token = excluded.lock_token, locked_until = excluded.locked_until
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
