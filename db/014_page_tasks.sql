-- Page tasks: the pages of one document read in parallel by any free slot of any worker (issue 17, "Pages in
-- parallel"). See docs/design/queue.md, "Page tasks".
--
-- The job is claimed as always (claim_job, under the table lock). The slot that claimed it counts the pages and,
-- fenced by its lease, splits it: one row per page here, and the job's lease passes to its pages (worker
-- 'pages', never expiring: the job is rescued through its pages, not as a whole). The slot is free at once.
-- Every page is then claimed, leased, renewed, ended, retried and rescued like a job, fenced by (job, page,
-- worker, attempt). The end of the last page hands the job's lease (same attempt) to the slot that read it,
-- which assembles the results in page order and ends the job as any job ends, under that lease; if it is lost
-- meanwhile, the job is rescued as any job, and the next claim finds every page read and assembles at once. A
-- page that fails (its error, or its attempts spent on lost workers) fails the job, naming the page; a cancel
-- of a split job ends it at once (no worker holds it). The rows of pages read stay, as history (who read which
-- page); the others go when the job ends, so nothing of an ended job can be claimed.
--
-- Claims take new jobs first and pages only for the slots left over (claim_work below): a queued one-page
-- document never waits behind the pages of a long one, and the pages fill the idle slots. Two things keep the
-- pages from waiting behind a steady stream of new jobs: the slot that split a job takes one of its pages every
-- other claim (claim_page with its id) while there are any, and a page that has waited a minute goes before new
-- jobs (page_wait below). claim_jobs (db/013) stays as it was, for workers of the previous release during a
-- rolling upgrade: they never get a page.
CREATE SEQUENCE page_task_order;

CREATE TABLE page_tasks (
    job_id      uuid NOT NULL REFERENCES jobs(id),
    page        integer NOT NULL CHECK (page >= 1),
    -- Pages of the job split first go first, each job's in page order.
    position    bigint NOT NULL,
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    worker      text,
    claimed_at  timestamptz,
    expires_at  timestamptz,
    not_before  timestamptz,
    -- Since when it is claimable (its split, its requeue's retry time, its rescue): a page claimable for longer
    -- than a minute goes before new jobs.
    queued_at   timestamptz NOT NULL,
    reason      text,
    PRIMARY KEY (job_id, page)
);
CREATE INDEX page_tasks_queued_idx ON page_tasks (position) WHERE state = 'queued';
CREATE INDEX page_tasks_expiry_idx ON page_tasks (expires_at) WHERE state = 'running';
CREATE INDEX page_tasks_waiting_idx ON page_tasks (queued_at) WHERE state = 'queued';

-- How long a claimable page waits behind new jobs at most.
CREATE FUNCTION page_wait() RETURNS interval LANGUAGE sql IMMUTABLE AS $$ SELECT interval '60 seconds' $$;

-- Splits the job the lease holds into pages 1...p_pages (those that exist stay as they are: a job rescued after
-- its split keeps the pages read) and records the page count. Returns 'split' (the job's lease passed to its
-- pages; idle workers are woken), 'complete' (every page was read already: the caller keeps the lease and
-- assembles), 'cancelled' (its cancel was requested: the caller ends it "cancelled", nothing is split) or 'lost'
-- (the attempt no longer holds the job: nothing written).
CREATE FUNCTION split_job(p_job uuid, p_worker text, p_attempt integer, p_pages integer)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_done integer;
BEGIN
    IF p_pages IS NULL OR p_pages < 1 OR p_pages > 100000 THEN
        RAISE EXCEPTION 'split_job takes 1 to 100000 pages, not %', p_pages USING ERRCODE = '22023';
    END IF;
    PERFORM 1 FROM job_leases WHERE job_id = p_job AND worker = p_worker AND attempt = p_attempt FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'lost';
    END IF;
    -- A cancel requested before the split is the holder's to carry out; one that comes after finds the job
    -- split and ends it itself (cancel_job below). The job's row lock orders the two.
    IF (SELECT cancel_requested_at FROM jobs WHERE id = p_job FOR UPDATE) IS NOT NULL THEN
        RETURN 'cancelled';
    END IF;
    INSERT INTO page_tasks (job_id, page, position, queued_at)
    SELECT p_job, n, nextval('page_task_order'), now() FROM generate_series(1, p_pages) n
    ORDER BY n
    ON CONFLICT (job_id, page) DO NOTHING;
    SELECT count(*) INTO v_done FROM page_tasks WHERE job_id = p_job AND state = 'done' AND page <= p_pages;
    UPDATE jobs SET pages_total = p_pages, pages_done = v_done WHERE id = p_job;
    IF v_done >= p_pages THEN
        RETURN 'complete';
    END IF;
    UPDATE job_leases SET worker = 'pages', expires_at = 'infinity' WHERE job_id = p_job;
    PERFORM pg_notify('lector_job_queued', '');
    RETURN 'split';
END;
$$;

-- Claims the first queued page (of p_job, or of any job when it is null) whose retry time has come, for p_worker,
-- with a lease; with p_queued_before, only a page claimable since before then, the longest waiting first. SKIP
-- LOCKED: the table lock orders jobs between owners; the pages of a job already claimed need no such order, and
-- two claimers never take one page (the row stays locked until the commit).
CREATE FUNCTION claim_page(p_job uuid, p_worker text, p_lease_seconds float8, p_now timestamptz, p_queued_before timestamptz)
RETURNS TABLE (job_id uuid, page integer, attempt integer, content_type text, options text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := coalesce(p_now, now());
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT t.job_id, t.page FROM page_tasks t
        WHERE t.state = 'queued' AND (t.not_before IS NULL OR t.not_before <= v_now)
          AND (p_job IS NULL OR t.job_id = p_job) AND p_queued_before IS NULL
        ORDER BY t.position
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), waited AS (
        SELECT t.job_id, t.page FROM page_tasks t
        WHERE t.state = 'queued' AND t.queued_at < p_queued_before AND (t.not_before IS NULL OR t.not_before <= v_now)
          AND (p_job IS NULL OR t.job_id = p_job)
        ORDER BY t.queued_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), chosen AS (
        SELECT * FROM picked UNION ALL SELECT * FROM waited
    ), claimed AS (
        UPDATE page_tasks t SET state = 'running', attempts = t.attempts + 1, worker = p_worker,
            claimed_at = v_now, expires_at = v_now + make_interval(secs => p_lease_seconds), not_before = NULL
        FROM chosen WHERE t.job_id = chosen.job_id AND t.page = chosen.page
        RETURNING t.job_id, t.page, t.attempts
    )
    SELECT c.job_id, c.page, c.attempts, j.content_type, j.options::text
    FROM claimed c JOIN jobs j ON j.id = c.job_id;
END;
$$;

-- Ends a page the attempt holds, read (p_failure null) or failed. Returns -1 when the attempt no longer holds
-- the page (nothing written); 0 when it ended; or, when it was the job's last page, the job's attempt: the
-- job's lease is now the caller's (for p_lease_seconds), to assemble and end the job. A failed page fails the
-- job at once, "page N: <why>". The job's row is locked first (an end of the job locks the job, then deletes its
-- pages: the same order, so the two never wait on each other in a cycle); the job's progress is the count of
-- pages read, announced as job_progress announces it.
CREATE FUNCTION end_page(p_job uuid, p_page integer, p_worker text, p_attempt integer, p_failure text, p_lease_seconds float8)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_owner bigint;
    v_status text;
    v_done integer;
    v_total integer;
    v_attempt integer;
BEGIN
    SELECT owner_id, status, pages_total INTO v_owner, v_status, v_total FROM jobs WHERE id = p_job FOR UPDATE;
    UPDATE page_tasks SET state = CASE WHEN p_failure IS NULL THEN 'done' ELSE 'failed' END,
        reason = p_failure, expires_at = NULL
    WHERE job_id = p_job AND page = p_page AND worker = p_worker AND attempts = p_attempt AND state = 'running';
    IF NOT FOUND THEN
        -- The same end again (its answer was lost): the page stays read, and the job's lease, if this end handed
        -- it over, is still the caller's.
        IF p_failure IS NULL AND EXISTS (SELECT 1 FROM page_tasks WHERE job_id = p_job AND page = p_page
                                         AND worker = p_worker AND attempts = p_attempt AND state = 'done') THEN
            SELECT attempt INTO v_attempt FROM job_leases WHERE job_id = p_job AND worker = p_worker;
            RETURN coalesce(v_attempt, 0);
        END IF;
        RETURN -1;
    END IF;
    IF p_failure IS NOT NULL THEN
        IF v_status = 'IN_PROGRESS' THEN
            INSERT INTO job_transitions (job_id, status, worker, reason)
            VALUES (p_job, 'FAILURE', p_worker, left('page ' || p_page || ': ' || p_failure, 2000));
        END IF;
        RETURN 0;
    END IF;
    SELECT count(*) INTO v_done FROM page_tasks WHERE job_id = p_job AND state = 'done';
    UPDATE jobs SET pages_done = v_done WHERE id = p_job;
    PERFORM pg_notify('lector_job_events', 'p ' || p_job || ' ' || v_owner || ' ' || v_done || ' ' || coalesce(v_total, v_done));
    IF v_done >= v_total THEN
        UPDATE job_leases SET worker = p_worker, claimed_at = now(), expires_at = now() + make_interval(secs => p_lease_seconds)
        WHERE job_id = p_job AND worker = 'pages'
        RETURNING attempt INTO v_attempt;
        IF FOUND THEN
            RETURN v_attempt;
        END IF;
    END IF;
    RETURN 0;
END;
$$;

-- Fails the jobs of pages that used their attempts on lost workers (the rescuer marks such pages 'failed').
CREATE FUNCTION fail_jobs_of_failed_pages(p_jobs uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_transitions (job_id, status, reason)
    SELECT j.id, 'FAILURE', left('page ' || t.page || ': ' || coalesce(t.reason, 'failed'), 2000)
    FROM jobs j
    JOIN LATERAL (SELECT page, reason FROM page_tasks WHERE job_id = j.id AND state = 'failed' ORDER BY page LIMIT 1) t ON true
    WHERE j.id = ANY(p_jobs) AND j.status = 'IN_PROGRESS'
    ORDER BY j.id;
END;
$$;

-- A cancel of a split job ends it at once: no worker holds it (its lease is its pages'); the readers of its pages
-- are told as before (lector_job_cancel) and find their leases gone. Otherwise as db/009's.
CREATE OR REPLACE FUNCTION cancel_job(p_job uuid, p_owner bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_deleted timestamptz;
BEGIN
    LOCK TABLE job_claim_lock IN EXCLUSIVE MODE;
    SELECT status, deleted_at INTO v_status, v_deleted FROM jobs WHERE id = p_job AND owner_id = p_owner FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_deleted IS NOT NULL THEN
        RETURN 'gone';
    END IF;
    IF v_status = 'QUEUED' THEN
        UPDATE jobs SET cancel_requested_at = now() WHERE id = p_job;
        INSERT INTO job_transitions (job_id, status, reason) VALUES (p_job, 'FAILURE', 'cancelled');
        RETURN 'cancelled';
    ELSIF v_status = 'IN_PROGRESS' THEN
        UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()) WHERE id = p_job;
        PERFORM pg_notify('lector_job_cancel', p_job::text);
        IF EXISTS (SELECT 1 FROM job_leases WHERE job_id = p_job AND worker = 'pages') THEN
            INSERT INTO job_transitions (job_id, status, reason) VALUES (p_job, 'FAILURE', 'cancelled');
            RETURN 'cancelled';
        END IF;
        RETURN 'requested';
    END IF;
    RETURN 'ended';
END;
$$;

-- A job that ends drops its pages not read (queued, running, failed): nothing of it can be claimed or renewed
-- after, and an attempt still reading one finds its lease gone. The rows of pages read stay.
-- (WHEN: the other transitions do not even call the function.)
CREATE FUNCTION job_transition_pages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM page_tasks WHERE job_id = NEW.job_id AND state <> 'done';
    RETURN NEW;
END;
$$;

CREATE TRIGGER job_transitions_pages AFTER INSERT ON job_transitions
    FOR EACH ROW WHEN (NEW.status IN ('FINISHED', 'FAILURE')) EXECUTE FUNCTION job_transition_pages();

-- Several claims in one transaction, as claim_jobs (db/013), with pages: for each worker, a page that has waited
-- longer than page_wait(), else a new job (claim_job, under the table lock, every rule), else a page. A page
-- claim comes back with its page number (null for a job).
CREATE FUNCTION claim_work(p_workers text[], p_lease_seconds float8, p_now timestamptz, p_skip_locked boolean)
RETURNS TABLE (worker text, job_id uuid, attempt integer, content_type text, options text, page integer)
LANGUAGE plpgsql
AS $$
DECLARE
    v_worker text;
    v_job uuid;
    v_attempt integer;
    v_type text;
    v_options text;
    v_page integer;
    v_jobs boolean := true;
    v_waited boolean := true;
    v_before timestamptz := coalesce(p_now, now()) - page_wait();
BEGIN
    IF coalesce(cardinality(p_workers), 0) > 256 THEN
        RAISE EXCEPTION 'claim_work takes at most 256 workers' USING ERRCODE = '22023';
    END IF;
    FOREACH v_worker IN ARRAY coalesce(p_workers, '{}') LOOP
        v_job := NULL;
        IF v_waited THEN
            SELECT c.job_id, c.attempt, c.content_type, c.options, c.page INTO v_job, v_attempt, v_type, v_options, v_page
            FROM claim_page(NULL, v_worker, p_lease_seconds, p_now, v_before) c;
            v_waited := v_job IS NOT NULL;
        END IF;
        IF v_job IS NULL AND v_jobs THEN
            SELECT c.job_id, c.attempt, c.content_type, c.options, NULL INTO v_job, v_attempt, v_type, v_options, v_page
            FROM claim_job(v_worker, p_lease_seconds, p_now, p_skip_locked) c;
            v_jobs := v_job IS NOT NULL;
        END IF;
        IF v_job IS NULL THEN
            SELECT c.job_id, c.attempt, c.content_type, c.options, c.page INTO v_job, v_attempt, v_type, v_options, v_page
            FROM claim_page(NULL, v_worker, p_lease_seconds, p_now, NULL) c;
            EXIT WHEN v_job IS NULL;
        END IF;
        worker := v_worker;
        job_id := v_job;
        attempt := v_attempt;
        content_type := v_type;
        options := v_options;
        page := v_page;
        RETURN NEXT;
    END LOOP;
END;
$$;
