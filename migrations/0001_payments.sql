-- Every payment the forwarder has taken: claimed first (status 'pending', with the processor
-- and requested_at of the attempt under way), then 'processed' once that processor holds it.
-- The summary counts 'processed' rows only.
CREATE TABLE IF NOT EXISTS payments (
    correlation_id uuid PRIMARY KEY,
    amount numeric(14, 2) NOT NULL CHECK (amount > 0),
    status text NOT NULL CHECK (status IN ('pending', 'processed')),
    processor text,
    requested_at timestamptz,
    attempted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS payments_processed_requested_at
    ON payments (requested_at) INCLUDE (processor, amount) WHERE status = 'processed';

-- One row: when the store was last purged, so queued items older than that are dropped.
CREATE TABLE IF NOT EXISTS purges (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    purged_at timestamptz NOT NULL
);
