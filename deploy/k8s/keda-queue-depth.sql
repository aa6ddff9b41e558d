SELECT (SELECT count(*) FROM jobs WHERE status = 'QUEUED' AND blocked_by = 0 AND (not_before IS NULL OR not_before <= now()))
     + (SELECT count(*) FROM job_leases) AS jobs
