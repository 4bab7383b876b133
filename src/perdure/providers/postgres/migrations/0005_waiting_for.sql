-- OrchestrationState.waiting_for: the external events an execution's code waits for, written by
-- each turn with the rest of the instance row (ack_orchestration_item gains p_waiting_for).
ALTER TABLE instances ADD COLUMN waiting_for text;

DROP FUNCTION ack_orchestration_item(
    text, text, integer, integer[], text[], text[], text[], text[], integer[], text[], text[], timestamptz[],
    text[], text[], text[], text[], boolean, text, text, text, integer, text, text, text, text, text, bigint[], text
);

-- Commit a turn and release the instance lock, atomically. Returns false, writing nothing, when
-- the lock is no longer held with p_lock_token (it expired and was taken over).
CREATE FUNCTION ack_orchestration_item(
    p_instance_id text, p_lock_token text, p_execution_id integer,
    p_event_ids integer[], p_events text[],
    p_work_queues text[], p_work_requests text[],
    p_instances text[], p_executions integer[], p_kinds text[], p_msg_events text[], p_visible timestamptz[],
    p_start_instances text[], p_start_names text[], p_start_inputs text[], p_start_parents text[],
    p_set_state boolean, p_name text, p_version text, p_status text, p_state_execution_id integer,
    p_input text, p_output text, p_error text, p_custom_status text, p_parent_instance_id text,
    p_consumed bigint[], p_notify text, p_waiting_for text DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM instance_locks WHERE instance_id = p_instance_id AND lock_token = p_lock_token;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF cardinality(p_event_ids) > 0 THEN
        INSERT INTO history (instance_id, execution_id, event_id, event)
        SELECT p_instance_id, p_execution_id, e.event_id, e.event FROM unnest(p_event_ids, p_events) AS e(event_id, event);
    END IF;
    IF cardinality(p_work_queues) > 0 THEN
        INSERT INTO worker_queue (queue, instance_id, request, visible_at)
        SELECT w.queue, p_instance_id, w.request, now()
        FROM unnest(p_work_queues, p_work_requests) WITH ORDINALITY AS w(queue, request, n) ORDER BY w.n;
    END IF;
    PERFORM enqueue_messages(p_instances, p_executions, p_kinds, p_msg_events, p_visible,
                             p_start_instances, p_start_names, p_start_inputs, p_start_parents, p_notify);
    IF p_set_state THEN
        UPDATE instances SET name = p_name, version = p_version, status = p_status, execution_id = p_state_execution_id,
            input = p_input, output = p_output, error = p_error, custom_status = p_custom_status,
            parent_instance_id = p_parent_instance_id, updated_at = now(), waiting_for = p_waiting_for
        WHERE instance_id = p_instance_id;
    END IF;
    IF cardinality(p_consumed) > 0 THEN
        DELETE FROM orchestrator_queue WHERE message_id = ANY (p_consumed);
    END IF;
    -- Messages the turn left queued (held back while suspended) start counting afresh.
    UPDATE orchestrator_queue SET dequeue_count = 0 WHERE instance_id = p_instance_id AND dequeue_count > 0;
    RETURN true;
END
$$;
