SELECT (SELECT count(*) FROM jobs WHERE status = 'QUEUED' AND blocked_by = 0 AND (not_before IS NULL OR not_before <= now()))
     + (SELECT count(*) FROM job_leases WHERE worker <> 'pages')
     + (SELECT count(*) FROM page_tasks WHERE state = 'running' OR (state = 'queued' AND (not_before IS NULL OR not_before <= now()))) AS jobs
