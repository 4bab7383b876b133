-- Receipts of enqueue calls: a call retried after its reply was lost (the commit happened, the
-- connection died before the answer) finds its receipt and is not applied twice.
CREATE TABLE enqueue_receipts (
    key        text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enqueue_receipts_by_created ON enqueue_receipts (created_at);
