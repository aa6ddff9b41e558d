-- A durable mark for the removal of a deleted job's stored folder (files or objects). See docs/object-storage.md,
-- "Delete".
--
-- A job is deleted in the database first (DELETE /v1/jobs/{id}, or retention: jobs.deleted_at is set), and its
-- folder is removed after the commit. When that removal fails (the store unreachable, a crash in between), the
-- sweeper used to find the folder again only while its listing window saw it. Now the commit that deletes a job
-- also records it here (the trigger below, so delete_job and the retention UPDATE need no change), and the
-- StorageSweeper retries every mark older than a few minutes, in one process at a time, until the storage confirms
-- that nothing is left; then the mark goes. Removing a folder twice is no error, so a retry is always safe.
--
-- Jobs deleted before this migration have no mark: their leftovers, if any, are still found by the sweeper's
-- listing (a deleted job counts as unknown there).
CREATE TABLE storage_removals (
    job_id uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    marked_at timestamptz NOT NULL DEFAULT now(),
    -- The last failed try, and how many failed: a mark that keeps failing goes to the back of the line.
    tried_at timestamptz,
    tries int NOT NULL DEFAULT 0
);

-- The sweeper takes the marks in this order.
CREATE INDEX storage_removals_due_idx ON storage_removals ((coalesce(tried_at, marked_at)));

CREATE FUNCTION mark_storage_removal() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO storage_removals (job_id) VALUES (NEW.id) ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_mark_storage_removal
    AFTER UPDATE OF deleted_at ON jobs
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION mark_storage_removal();
