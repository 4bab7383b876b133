-- A turn's ack can also lock some of the work items it queues, for the writing process's idle
-- activity loops (eager activity dispatch): one statement instead of the ack and a claim. The new
-- signature takes what the claim asks for and returns the claimed items. Callers of the previous
-- release use the old signature, which stays (claiming nothing) during a rolling deploy. The ack
-- also returns the instance row's times, so a turn that ends an execution knows the stored state.

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

-- The previous release's signature: the same commit, claiming nothing.
CREATE OR REPLACE FUNCTION ack_orchestration_item(
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
