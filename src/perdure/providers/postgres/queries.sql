-- Named queries of the PostgreSQL provider. Parameters are named (%(name)s); every connection's
-- search_path is the tenant's schema. Each query is one round trip. Arrays go in binary (%(name)b,
-- always with a cast): psycopg then quotes no element, which costs less CPU per call than text.
--
-- Due times are the database's: a message's delay (seconds after the writer's clock read "now";
-- NULL for at once) is added to now(), so a writer whose clock is off still gets the delay it
-- asked for, and every host agrees on when a timer is due.

-- name: create_instance
-- Insert the instance and its start message only if the instance is new; returns a row if it was.
WITH created AS (
    INSERT INTO instances (instance_id, name, status, execution_id, input, parent_instance_id, created_at, updated_at)
    VALUES (%(instance_id)s, %(name)s, 'PENDING', 1, %(input)s, %(parent_instance_id)s, now(), now())
    ON CONFLICT (instance_id) DO NOTHING
    RETURNING instance_id
), queued AS (
    INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)
    SELECT instance_id, %(execution_id)s, %(kind)s, %(event)s, now() + make_interval(secs => coalesce(%(delay)s::double precision, 0)) FROM created
    RETURNING message_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM queued

-- name: hold_instance
-- The advisory lock fetch_orchestration_item takes on an instance, held to the end of the transaction.
SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext(%(instance_id)s::text))

-- name: delete_instance_lock
DELETE FROM instance_locks WHERE instance_id = %(instance_id)s

-- name: restart_instance
-- Every row the instance owns goes; its row describes a fresh run in the next execution (or 1).
WITH history_rows AS (
    DELETE FROM history WHERE instance_id = %(instance_id)s
), work_items AS (
    DELETE FROM worker_queue WHERE instance_id = %(instance_id)s
), messages AS (
    DELETE FROM orchestrator_queue WHERE instance_id = %(instance_id)s
)
INSERT INTO instances AS i (instance_id, name, status, execution_id, input, parent_instance_id, created_at, updated_at)
VALUES (%(instance_id)s, %(name)s, 'PENDING',
        coalesce((SELECT execution_id FROM instances WHERE instance_id = %(instance_id)s), 0) + 1,
        %(input)s, %(parent_instance_id)s, now(), now())
ON CONFLICT (instance_id) DO UPDATE SET
    name = excluded.name, version = NULL, status = 'PENDING', execution_id = excluded.execution_id,
    input = excluded.input, output = NULL, error = NULL, custom_status = NULL, waiting_for = NULL,
    parent_instance_id = excluded.parent_instance_id, created_at = excluded.created_at, updated_at = excluded.updated_at
RETURNING i.execution_id

-- name: queue_start
WITH queued AS (
    INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)
    VALUES (%(instance_id)s, %(execution_id)s, %(kind)s, %(event)s, now() + make_interval(secs => coalesce(%(delay)s::double precision, 0)))
    RETURNING message_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM queued

-- name: request_rewind
-- A rewind waits for its turn: the failed instance reads PENDING at once and keeps its error.
WITH marked AS (
    UPDATE instances SET status = 'PENDING', updated_at = now()
    WHERE instance_id = %(instance_id)s AND status = 'FAILED' AND execution_id = %(execution_id)s
    RETURNING instance_id
), queued AS (
    INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)
    SELECT instance_id, %(execution_id)s, %(kind)s, %(event)s, now() FROM marked
    RETURNING message_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM queued

-- name: select_start
SELECT name, input FROM instances WHERE instance_id = %(instance_id)s

-- name: enqueue_messages
-- Once per call: the receipt makes a retry of a call that did commit a no-op. Receipts older than
-- a day (far beyond any retry) are swept on the way.
WITH receipt AS (
    INSERT INTO enqueue_receipts (key) VALUES (%(receipt)s) ON CONFLICT DO NOTHING RETURNING key
), swept AS (
    DELETE FROM enqueue_receipts WHERE created_at < now() - interval '1 day'
)
SELECT enqueue_messages(
    %(instances)b::text[], %(executions)b::integer[], %(kinds)b::text[], %(msg_events)b::text[],
    ARRAY(SELECT now() + make_interval(secs => d) FROM unnest(%(delays)b::double precision[]) WITH ORDINALITY AS x(d, n) ORDER BY n), %(start_instances)b::text[], %(start_names)b::text[], %(start_inputs)b::text[],
    %(start_parents)b::text[], %(notify)s
) FROM receipt

-- name: select_state
SELECT instance_id, name, version, status, execution_id, input, output, error, custom_status,
       parent_instance_id, created_at, updated_at, waiting_for
FROM instances WHERE instance_id = %(instance_id)s

-- name: select_history
SELECT event FROM history WHERE instance_id = %(instance_id)s AND execution_id = %(execution_id)s ORDER BY event_id

-- name: select_history_from
-- The tail of an execution's history, for a caller that holds the events before event_id.
SELECT event FROM history
WHERE instance_id = %(instance_id)s AND execution_id = %(execution_id)s AND event_id >= %(event_id)s ORDER BY event_id

-- name: select_current_history
SELECT h.event FROM history h JOIN instances i ON i.instance_id = h.instance_id AND i.execution_id = h.execution_id
WHERE h.instance_id = %(instance_id)s ORDER BY h.event_id

-- name: purge_instances
-- Only finished instances are deleted (and rows whose status is corrupted: they read as FAILED),
-- with everything that belongs to them; returns how many.
WITH purged AS (
    DELETE FROM instances
    WHERE instance_id = ANY (%(instance_ids)b::text[]) AND status NOT IN ('PENDING', 'RUNNING', 'SUSPENDED')
    RETURNING instance_id
), history_rows AS (
    DELETE FROM history h USING purged p WHERE h.instance_id = p.instance_id
), messages AS (
    DELETE FROM orchestrator_queue q USING purged p WHERE q.instance_id = p.instance_id
), work_items AS (
    DELETE FROM worker_queue w USING purged p WHERE w.instance_id = p.instance_id
), locks AS (
    DELETE FROM instance_locks l USING purged p WHERE l.instance_id = p.instance_id
)
SELECT count(*) FROM purged

-- name: fetch_orchestration_item
SELECT * FROM fetch_orchestration_item(%(lock_seconds)s, %(lock_token)s, %(worker_id)s, %(tail_over)s)

-- name: claim_orchestration_item
-- Run in the transaction of the write that queued the instance's message (see _turn_handoff).
SELECT * FROM claim_orchestration_item(%(instance_id)s, %(lock_seconds)s, %(lock_token)s, %(worker_id)s, %(tail_over)s)

-- name: ack_orchestration_item
-- Returns whether it committed, and the new work items it locked for this process's idle loops.
SELECT * FROM ack_orchestration_item(
    %(instance_id)s, %(lock_token)s, %(execution_id)s,
    %(event_ids)b::integer[], %(events)b::text[],
    %(work_queues)b::text[], %(work_requests)b::text[],
    %(instances)b::text[], %(executions)b::integer[], %(kinds)b::text[], %(msg_events)b::text[],
    ARRAY(SELECT now() + make_interval(secs => d) FROM unnest(%(delays)b::double precision[]) WITH ORDINALITY AS x(d, n) ORDER BY n),
    %(start_instances)b::text[], %(start_names)b::text[], %(start_inputs)b::text[], %(start_parents)b::text[],
    %(set_state)s, %(name)s, %(version)s, %(status)s, %(state_execution_id)s,
    %(input)s, %(output)s, %(error)s, %(custom_status)s, %(parent_instance_id)s,
    %(consumed)b::bigint[], %(notify)s, %(waiting_for)s,
    %(claim_queues)b::text[], %(claim_count)s::integer, %(claim_token)s, %(claim_seconds)s::double precision,
    %(claim_worker)s
)

-- name: abandon_orchestration_item
-- Release the lock (if still ours); with a delay, keep holding the whole instance until then
-- instead, so that no message arriving meanwhile overtakes the ones put back. Wakes other processes.
-- With message ids in undone, the delivery the fetch counted is taken back (the lock still ours).
WITH undone AS (
    UPDATE orchestrator_queue SET dequeue_count = dequeue_count - 1
    WHERE message_id = ANY(%(undone)b::bigint[]) AND dequeue_count > 0
      AND EXISTS (SELECT 1 FROM instance_locks WHERE instance_id = %(instance_id)s AND lock_token = %(lock_token)s)
), released AS (
    DELETE FROM instance_locks
    WHERE instance_id = %(instance_id)s AND lock_token = %(lock_token)s AND %(delay)s <= 0
), held AS (  -- by the delay alone: no worker's beats extend it
    UPDATE instance_locks SET locked_until = now() + make_interval(secs => %(delay)s), worker_id = NULL
    WHERE instance_id = %(instance_id)s AND lock_token = %(lock_token)s AND %(delay)s > 0
)
SELECT pg_notify(notify_channel(), %(notify)s)

-- name: fetch_work_item
-- The oldest visible unlocked items of one queue, at most count (one, and more for this process's
-- idle loops): the first entries of worker_queue_by_visible that are not locked, however many
-- items are queued. Every one is locked alike and counts its delivery.
WITH next AS (
    SELECT item_id FROM worker_queue
    WHERE queue = %(queue)s AND visible_at <= now()
    ORDER BY visible_at, item_id
    LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
), locked AS (
    UPDATE worker_queue w
    SET lock_token = %(lock_token)s, visible_at = now() + make_interval(secs => %(lock_seconds)s),
        dequeue_count = w.dequeue_count + 1, worker_id = %(worker_id)s
    FROM next WHERE w.item_id = next.item_id
    RETURNING w.item_id, w.request, w.dequeue_count, w.heartbeat_details, w.heartbeat_at
)
SELECT array_agg(item_id ORDER BY item_id), array_agg(request ORDER BY item_id),
    array_agg(dequeue_count ORDER BY item_id), array_agg(heartbeat_details ORDER BY item_id),
    array_agg(heartbeat_at ORDER BY item_id)
FROM locked

-- name: fetch_work_item_of_queues
-- The same for several queues: the first count of each, then the oldest count of those. Per queue,
-- so that each is a few steps down worker_queue_by_visible: with "queue = ANY (...)" the planner
-- cannot walk the index in order and sorts every visible item instead, on every fetch (a fan-out of
-- 20,000 made that quadratic). The heads of the other queues stay locked until the commit.
WITH next AS (
    SELECT head.item_id FROM unnest(%(queues)b::text[]) AS q(queue)
    CROSS JOIN LATERAL (
        SELECT w.item_id, w.visible_at FROM worker_queue w
        WHERE w.queue = q.queue AND w.visible_at <= now()
        ORDER BY w.visible_at, w.item_id
        LIMIT %(count)s
        FOR UPDATE SKIP LOCKED
    ) AS head
    ORDER BY head.visible_at, head.item_id
    LIMIT %(count)s
), locked AS (
    UPDATE worker_queue w
    SET lock_token = %(lock_token)s, visible_at = now() + make_interval(secs => %(lock_seconds)s),
        dequeue_count = w.dequeue_count + 1, worker_id = %(worker_id)s
    FROM next WHERE w.item_id = next.item_id
    RETURNING w.item_id, w.request, w.dequeue_count, w.heartbeat_details, w.heartbeat_at
)
SELECT array_agg(item_id ORDER BY item_id), array_agg(request ORDER BY item_id),
    array_agg(dequeue_count ORDER BY item_id), array_agg(heartbeat_details ORDER BY item_id),
    array_agg(heartbeat_at ORDER BY item_id)
FROM locked

-- name: release_claimed_work_items
-- Put back the instance's work items locked with lock_token by a turn's ack, undoing the delivery
-- it counted; notifies if there were any.
WITH released AS (
    UPDATE worker_queue SET lock_token = NULL, worker_id = NULL, visible_at = now(),
        dequeue_count = greatest(dequeue_count - 1, 0)
    WHERE instance_id = %(instance_id)s AND lock_token = %(lock_token)s
    RETURNING item_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM (SELECT 1 FROM released LIMIT 1) AS any_released

-- name: ack_work_item
-- Delete the item if the lock is still ours and enqueue its completion; no row back: lock lost.
WITH done AS (
    DELETE FROM worker_queue WHERE item_id = %(item_id)s AND lock_token = %(lock_token)s RETURNING item_id
), queued AS (
    INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)
    SELECT %(instance_id)s, %(execution_id)s, %(kind)s, %(event)s, now() + make_interval(secs => coalesce(%(delay)s::double precision, 0))
    FROM done
    RETURNING message_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM queued

-- name: select_instance_work_items
SELECT item_id, request FROM worker_queue WHERE instance_id = %(instance_id)s

-- name: cancel_work_items
-- Whoever holds them: their activities were cancelled, timed out, or their execution ended.
DELETE FROM worker_queue WHERE item_id = ANY (%(item_ids)b::bigint[])

-- name: select_held_work_items
-- The instance's work items held by a worker whose lock has not expired (the dashboard's "running on").
SELECT request, worker_id FROM worker_queue
WHERE instance_id = %(instance_id)s AND worker_id IS NOT NULL AND lock_token IS NOT NULL AND visible_at > now()

-- name: select_work_item_locks
SELECT item_id, lock_token FROM worker_queue WHERE item_id = ANY (%(item_ids)b::bigint[])

-- name: release_work_item
WITH released AS (
    UPDATE worker_queue SET lock_token = NULL, worker_id = NULL, visible_at = now() + make_interval(secs => %(seconds)s)
    WHERE item_id = %(item_id)s AND lock_token = %(lock_token)s
    RETURNING item_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM released

-- name: count_work_deliveries
-- Take back (change -1) or count again (+1) the deliveries of items still held by the fetches that locked them.
UPDATE worker_queue w SET dequeue_count = greatest(w.dequeue_count + %(change)s, 0)
FROM unnest(%(item_ids)b::bigint[], %(lock_tokens)b::text[]) AS held(item_id, lock_token)
WHERE w.item_id = held.item_id AND w.lock_token = held.lock_token
RETURNING w.item_id

-- name: renew_work_item
UPDATE worker_queue SET visible_at = now() + make_interval(secs => %(seconds)s)
WHERE item_id = %(item_id)s AND lock_token = %(lock_token)s
RETURNING item_id

-- name: earliest_orchestrator_due
-- Seconds (on the database clock) until a message can be fetched: none if one can be now (it came
-- after the caller's fetch found nothing; the caller registered its waiter before this read, so
-- later messages wake it), else until the next timer falls due or a lock on an instance with
-- queued messages expires (held back after a put-back, or left by a crashed worker). Locks of turns
-- in progress are released by their ack, which notifies.
SELECT extract(epoch FROM min(due) - now())::double precision FROM (
    (SELECT now() AS due FROM orchestrator_queue q
     WHERE q.visible_at <= now()
       AND NOT EXISTS (SELECT 1 FROM instance_locks l WHERE l.instance_id = q.instance_id AND l.locked_until > now())
       AND (q.kind = 'control'
            OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = q.instance_id AND i.status = 'SUSPENDED'))
     LIMIT 1)
    UNION ALL
    SELECT min(visible_at) FROM orchestrator_queue WHERE visible_at > now()
    UNION ALL
    SELECT min(l.locked_until) FROM instance_locks l
    WHERE l.locked_until > now() AND EXISTS (SELECT 1 FROM orchestrator_queue q WHERE q.instance_id = l.instance_id)
) AS d

-- name: earliest_worker_due
-- Seconds until a work item is visible: none if one is now (it came after the caller's fetch found
-- nothing), else until the next delayed or expiring one is.
-- Per queue, for the same reason as fetch_work_item: each minimum is the first entry of its index range.
SELECT extract(epoch FROM min(head.due) - now())::double precision FROM unnest(%(queues)b::text[]) AS q(queue)
CROSS JOIN LATERAL (SELECT min(w.visible_at) AS due FROM worker_queue w WHERE w.queue = q.queue) AS head

-- name: queue_depths
-- Messages and work items due now, by queue (for the queue-depth metric).
SELECT 'orchestrator', count(*) FROM orchestrator_queue WHERE visible_at <= now()
UNION ALL
SELECT 'activity:' || queue, count(*) FROM worker_queue WHERE visible_at <= now() GROUP BY queue

-- name: worker_beat
SELECT worker_beat(
    %(worker_id)s, %(host)s, %(pid)s, %(serves)s, %(started_at)s, %(timeout)s,
    %(items)b::bigint[], %(tokens)b::text[], %(details)b::text[]
)

-- name: delete_worker
DELETE FROM workers WHERE worker_id = %(worker_id)s

-- name: select_workers
SELECT worker_id, host, pid, serves, started_at, last_seen, expires_at > now() FROM workers
ORDER BY host, pid, started_at, worker_id

-- name: release_lost_instance_lock
-- A fetch retried after a lost connection: its first attempt may have committed a lock (with the
-- same token) on an instance other than the one the retry returns (kept), and its answer never
-- came. Release it, undoing the delivery it counted, so that no lock stays held with no turn to
-- run it (with a worker id, that worker's beats would extend it for as long as the worker lives).
WITH released AS (
    DELETE FROM instance_locks WHERE lock_token = %(lock_token)s AND instance_id IS DISTINCT FROM %(kept)s
    RETURNING instance_id
), undone AS (
    UPDATE orchestrator_queue q SET dequeue_count = q.dequeue_count - 1
    FROM released r WHERE q.instance_id = r.instance_id AND q.visible_at <= now() AND q.dequeue_count > 0
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM (SELECT 1 FROM released LIMIT 1) AS any_released

-- name: release_lost_work_item_lock
-- The same for a work fetch: items its first attempt locked with the same token go back, undone.
WITH released AS (
    UPDATE worker_queue SET lock_token = NULL, worker_id = NULL, visible_at = now(),
        dequeue_count = greatest(dequeue_count - 1, 0)
    WHERE lock_token = %(lock_token)s AND item_id <> ALL (%(kept)b::bigint[])
    RETURNING item_id
)
SELECT pg_notify(notify_channel(), %(notify)s) FROM (SELECT 1 FROM released LIMIT 1) AS any_released
