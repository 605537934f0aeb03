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
-- A child's running jobs by its token: completion, release and renewal are fenced by it, and
-- without this index the planner walks every running row (dead versions included) to find them.
CREATE INDEX jobs_leased ON {schema}.jobs (locked_by) WHERE status = 'running';
-- Listing dead and cancelled jobs (`workerpool jobs --status dead`); queued and running ones
-- are found through the two indexes above, succeeded ones (the bulk) by walking the primary
-- key. Claims and completions, the writes every job makes, add no entry here.
CREATE INDEX jobs_listing ON {schema}.jobs (status, id) WHERE status IN ('dead', 'cancelled');

-- One notification per statement, not per row, so a bulk enqueue wakes the pool once.
CREATE FUNCTION {schema}.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_jobs', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_notify AFTER INSERT ON {schema}.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_jobs();
