-- Named queries of the SQLite provider. Parameters are named (:name).

-- name: insert_instance
INSERT INTO instances (instance_id, name, status, execution_id, input, parent_instance_id, created_at, updated_at)
VALUES (:instance_id, :name, 'PENDING', 1, :input, :parent_instance_id, :now, :now)
ON CONFLICT (instance_id) DO NOTHING

-- name: restart_instance
-- The instance row of a fresh run: the next execution of an existing instance, else execution 1.
INSERT INTO instances (instance_id, name, status, execution_id, input, parent_instance_id, created_at, updated_at)
VALUES (:instance_id, :name, 'PENDING',
        COALESCE((SELECT execution_id FROM instances WHERE instance_id = :instance_id), 0) + 1,
        :input, :parent_instance_id, :now, :now)
ON CONFLICT (instance_id) DO UPDATE SET
    name = excluded.name, version = NULL, status = 'PENDING', execution_id = excluded.execution_id,
    input = excluded.input, output = NULL, error = NULL, custom_status = NULL, waiting_for = NULL,
    parent_instance_id = excluded.parent_instance_id, created_at = excluded.created_at, updated_at = excluded.updated_at
RETURNING execution_id

-- name: mark_rewinding
-- A rewind waits for its turn: the failed instance reads PENDING at once and keeps its error.
UPDATE instances SET status = 'PENDING', updated_at = :now
WHERE instance_id = :instance_id AND status = 'FAILED' AND execution_id = :execution_id

-- name: insert_message
-- kind is 'control' for a message that reaches a suspended instance, else 'message'.
INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)
VALUES (:instance_id, :execution_id, :kind, :event, :visible_at)

-- name: select_state
SELECT instance_id, name, version, status, execution_id, input, output, error, custom_status,
       parent_instance_id, created_at, updated_at, waiting_for
FROM instances WHERE instance_id = :instance_id

-- name: select_history
SELECT event FROM history WHERE instance_id = :instance_id AND execution_id = :execution_id ORDER BY event_id

-- name: select_history_from
-- The tail of an execution's history, for a caller that holds the events before event_id.
SELECT event_id, event FROM history
WHERE instance_id = :instance_id AND execution_id = :execution_id AND event_id >= :event_id ORDER BY event_id

-- name: select_current_history
SELECT h.event FROM history h JOIN instances i ON i.instance_id = h.instance_id AND i.execution_id = h.execution_id
WHERE h.instance_id = :instance_id ORDER BY h.event_id

-- name: next_orchestration_instance
-- The instance with the oldest visible message that no live lock holds. A suspended instance is
-- only taken for a control message.
SELECT q.instance_id FROM orchestrator_queue q
WHERE q.visible_at <= :now
  AND NOT EXISTS (SELECT 1 FROM instance_locks l WHERE l.instance_id = q.instance_id AND l.locked_until > :now)
  AND (q.kind = 'control'
       OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = q.instance_id AND i.status = 'SUSPENDED'))
ORDER BY q.visible_at, q.message_id
LIMIT 1

-- name: orchestration_instance_fetchable
-- The instance, if next_orchestration_instance could return it now and none of its work items is
-- queued or running (otherwise more completions are coming, and a later fetch takes them together).
SELECT q.instance_id FROM orchestrator_queue q
WHERE q.instance_id = :instance_id AND q.visible_at <= :now
  AND NOT EXISTS (SELECT 1 FROM instance_locks l WHERE l.instance_id = q.instance_id AND l.locked_until > :now)
  AND (q.kind = 'control'
       OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = q.instance_id AND i.status = 'SUSPENDED'))
  AND NOT EXISTS (SELECT 1 FROM worker_queue w WHERE w.instance_id = q.instance_id)
LIMIT 1

-- name: lock_instance
INSERT INTO instance_locks (instance_id, lock_token, locked_until, worker_id)
VALUES (:instance_id, :lock_token, :locked_until, :worker_id)
ON CONFLICT (instance_id) DO UPDATE
SET lock_token = excluded.lock_token, locked_until = excluded.locked_until, worker_id = excluded.worker_id

-- name: take_visible_messages
-- Counts the delivery and returns the messages in one statement (RETURNING order is not defined).
UPDATE orchestrator_queue SET dequeue_count = dequeue_count + 1
WHERE instance_id = :instance_id AND visible_at <= :now
RETURNING message_id, execution_id, event, dequeue_count

-- name: reset_dequeue
-- After a successful turn, messages it left queued (held back while suspended) start counting afresh.
UPDATE orchestrator_queue SET dequeue_count = 0 WHERE instance_id = :instance_id AND dequeue_count > 0

-- name: delete_lock
DELETE FROM instance_locks WHERE instance_id = :instance_id AND lock_token = :lock_token

-- name: insert_history
INSERT INTO history (instance_id, execution_id, event_id, event) VALUES (:instance_id, :execution_id, :event_id, :event)

-- name: insert_work_item
INSERT INTO worker_queue (queue, instance_id, request, visible_at) VALUES (:queue, :instance_id, :request, :now)

-- name: update_instance
UPDATE instances SET name = :name, version = :version, status = :status, execution_id = :execution_id,
    input = :input, output = :output, error = :error, custom_status = :custom_status,
    parent_instance_id = :parent_instance_id, updated_at = :now, waiting_for = :waiting_for
WHERE instance_id = :instance_id
-- The row as the turn left it (the select_state columns): a client waiting for the end needs no read.
RETURNING instance_id, name, version, status, execution_id, input, output, error, custom_status,
          parent_instance_id, created_at, updated_at, waiting_for

-- name: delete_message
DELETE FROM orchestrator_queue WHERE message_id = :message_id

-- name: undo_delivery
-- Take back the delivery a fetch counted, while the lock is still the fetch's.
UPDATE orchestrator_queue SET dequeue_count = dequeue_count - 1
WHERE message_id = :message_id AND dequeue_count > 0
  AND EXISTS (SELECT 1 FROM instance_locks WHERE instance_id = :instance_id AND lock_token = :lock_token)

-- name: hold_instance
-- Put back with a delay: the lock stays until then, so no message of the instance overtakes another.
-- No worker holds it any more: its beats must not extend the delay.
UPDATE instance_locks SET locked_until = :locked_until, worker_id = NULL
WHERE instance_id = :instance_id AND lock_token = :lock_token

-- name: next_work_item
SELECT item_id, request, dequeue_count + 1, heartbeat_details, heartbeat_at FROM worker_queue
WHERE queue IN (SELECT value FROM json_each(:queues)) AND visible_at <= :now
ORDER BY visible_at, item_id
LIMIT :count

-- name: claim_work_items
-- The instance's unlocked visible work items in these queues (those a turn just queued, in the same
-- group commit), at most count, oldest first; each is then locked as lock_work_item locks one.
SELECT item_id, request, dequeue_count + 1, heartbeat_details, heartbeat_at FROM worker_queue
WHERE instance_id = :instance_id AND queue IN (SELECT value FROM json_each(:queues))
  AND lock_token IS NULL AND visible_at <= :now
ORDER BY item_id
LIMIT :count

-- name: lock_work_item
UPDATE worker_queue
SET lock_token = :lock_token, visible_at = :locked_until, dequeue_count = dequeue_count + 1, worker_id = :worker_id
WHERE item_id = :item_id

-- name: delete_work_item
DELETE FROM worker_queue WHERE item_id = :item_id AND lock_token = :lock_token

-- name: select_instance_work_items
SELECT item_id, request FROM worker_queue WHERE instance_id = :instance_id

-- name: cancel_work_item
-- Whoever holds it: its activity was cancelled, timed out, or its execution ended.
DELETE FROM worker_queue WHERE item_id = :item_id

-- name: select_held_work_items
-- The instance's work items held by a worker whose lock has not expired (the dashboard's "running on").
SELECT request, worker_id FROM worker_queue
WHERE instance_id = :instance_id AND worker_id IS NOT NULL AND lock_token IS NOT NULL AND visible_at > :now

-- name: select_work_item_locks
SELECT item_id, lock_token FROM worker_queue WHERE item_id IN (SELECT value FROM json_each(:item_ids))

-- name: release_work_item
UPDATE worker_queue SET lock_token = NULL, worker_id = NULL, visible_at = :visible_at
WHERE item_id = :item_id AND lock_token = :lock_token

-- name: count_work_delivery
-- Take back (change -1) or count again (+1) the delivery of an item while it is still held by that fetch.
UPDATE worker_queue SET dequeue_count = MAX(dequeue_count + :change, 0)
WHERE item_id = :item_id AND lock_token = :lock_token

-- name: renew_work_item
UPDATE worker_queue SET visible_at = :locked_until WHERE item_id = :item_id AND lock_token = :lock_token

-- name: earliest_orchestrator_due
-- When the next message becomes fetchable: visible, its instance unlocked, and not held by suspension.
SELECT MIN(MAX(q.visible_at, COALESCE(l.locked_until, 0))) FROM orchestrator_queue q
LEFT JOIN instance_locks l ON l.instance_id = q.instance_id
WHERE q.kind = 'control'
   OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = q.instance_id AND i.status = 'SUSPENDED')

-- name: earliest_worker_due
SELECT MIN(visible_at) FROM worker_queue WHERE queue IN (SELECT value FROM json_each(:queues))

-- name: purge_instance
-- Finished instances, and rows whose status is corrupted (they read as FAILED).
DELETE FROM instances WHERE instance_id = :instance_id AND status NOT IN ('PENDING', 'RUNNING', 'SUSPENDED')

-- name: purge_history
DELETE FROM history WHERE instance_id = :instance_id

-- name: purge_messages
DELETE FROM orchestrator_queue WHERE instance_id = :instance_id

-- name: purge_work_items
DELETE FROM worker_queue WHERE instance_id = :instance_id

-- name: purge_lock
DELETE FROM instance_locks WHERE instance_id = :instance_id

-- name: orchestrator_queue_depth
SELECT COUNT(*) FROM orchestrator_queue WHERE visible_at <= :now

-- name: worker_queue_depths
SELECT queue, COUNT(*) FROM worker_queue WHERE visible_at <= :now GROUP BY queue ORDER BY queue

-- name: mark_control_messages
-- Files from before messages said whether they are control messages stored their event type as
-- the kind: the queued messages of the types that reach a suspended instance become 'control'.
UPDATE orchestrator_queue SET kind = 'control'
WHERE kind IN ('OrchestrationResumed', 'OrchestrationSuspended', 'TerminateRequested')

-- name: add_worker_columns
-- Files from before worker records: the columns the lock rows and work items gained.
ALTER TABLE instance_locks ADD COLUMN worker_id TEXT;
ALTER TABLE worker_queue ADD COLUMN worker_id TEXT;
ALTER TABLE worker_queue ADD COLUMN heartbeat_details TEXT;
ALTER TABLE worker_queue ADD COLUMN heartbeat_at REAL

-- name: add_waiting_for
-- Files from before OrchestrationState.waiting_for.
ALTER TABLE instances ADD COLUMN waiting_for TEXT

-- name: worker_indexes
CREATE INDEX IF NOT EXISTS instance_locks_by_worker ON instance_locks (worker_id) WHERE worker_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS worker_queue_by_worker ON worker_queue (worker_id) WHERE worker_id IS NOT NULL

-- name: beat_worker
-- The worker's record, created if missing (the first beat registers it; a worker whose record was
-- swept away while it could not reach the store comes back).
INSERT INTO workers (worker_id, host, pid, serves, started_at, last_seen, expires_at)
VALUES (:worker_id, :host, :pid, :serves, :started_at, :now, :expires_at)
ON CONFLICT (worker_id) DO UPDATE SET last_seen = excluded.last_seen, expires_at = excluded.expires_at

-- name: extend_instance_locks
UPDATE instance_locks SET locked_until = :expires_at WHERE worker_id = :worker_id

-- name: extend_work_items
UPDATE worker_queue SET visible_at = :expires_at WHERE worker_id = :worker_id

-- name: store_heartbeat
UPDATE worker_queue SET heartbeat_details = COALESCE(:details, heartbeat_details), heartbeat_at = :now
WHERE item_id = :item_id AND lock_token = :lock_token

-- name: sweep_workers
-- Records of workers dead for a day are of no more use to anyone.
DELETE FROM workers WHERE expires_at < :now - 86400

-- name: delete_worker
DELETE FROM workers WHERE worker_id = :worker_id

-- name: select_workers
SELECT worker_id, host, pid, serves, started_at, last_seen, expires_at > :now FROM workers
ORDER BY host, pid, started_at, worker_id

-- name: running_or_due
-- For a test environment's virtual clock: whether a worker holds an instance (a turn in flight), an
-- activity is locked (running) or due. A lock without a worker is a hold, and is due when it ends.
SELECT EXISTS (SELECT 1 FROM instance_locks WHERE worker_id IS NOT NULL AND locked_until > :now)
    OR EXISTS (SELECT 1 FROM worker_queue WHERE lock_token IS NOT NULL OR visible_at <= :now)

-- name: earliest_work_due
SELECT MIN(visible_at) FROM worker_queue

-- name: shift_workers
-- The virtual clock moved on while nothing ran: live workers' records move with it (they stand for
-- real time), so that they do not read as dead, nor are swept away, until their next beat.
UPDATE workers SET expires_at = expires_at + :seconds
