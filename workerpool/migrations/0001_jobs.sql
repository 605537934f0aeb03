-- The jobs table, its claim index and the wake-up trigger.
CREATE TABLE {schema}.jobs (
    id           bigserial PRIMARY KEY,
    queue        text NOT NULL DEFAULT 'default',
    task         text NOT NULL,
    payload      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    priority     integer NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    timeout      double precision CHECK (timeout > 0),
    locked_by    text,
    lease_until  timestamptz,
    result       jsonb,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);

-- Only claimable rows are indexed, so claiming stays fast however many finished rows pile up.
CREATE INDEX jobs_claimable ON {schema}.jobs (priority, run_at, id) WHERE status = 'queued';
-- Listing by status (`workerpool jobs --status dead`), and the running rows that lease rescue
-- and release look through. Succeeded jobs, the bulk of the table, stay out of it, so the
-- completion every job makes writes no entry here; listing them walks the primary key.
CREATE INDEX jobs_listing ON {schema}.jobs (status, id) WHERE status <> 'succeeded';

-- One notification per statement, not per row, so a bulk enqueue wakes the pool once.
CREATE FUNCTION {schema}.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify AFTER INSERT ON {schema}.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_jobs();
