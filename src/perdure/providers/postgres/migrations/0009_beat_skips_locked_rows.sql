-- A worker's beat no longer waits for rows another transaction has locked. A process's pipelined
-- batches lock rows of worker_queue and instance_locks in whatever order their calls came (an
-- activity's ack, then a turn's ack), while the beat extended instance_locks, then worker_queue:
-- the two could deadlock, each costing a second (deadlock_timeout) and a retry. A row locked by
-- another transaction is being acked, released or renewed right now, or was looked at by a fetch
-- that did not take it: the next beat extends it, long before the lock could expire. The
-- heartbeats go first, so the beat holds no lock row while it waits for one of them.
CREATE OR REPLACE FUNCTION worker_beat(
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
