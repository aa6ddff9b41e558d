-- Page progress of a running attempt: the worker writes how many pages of how many it has read with each
-- lease renewal, so the job list can say "page 3 of 10". It lives on the lease row, which goes when the job
-- leaves IN_PROGRESS, so it never outlives the attempt that wrote it.
ALTER TABLE job_leases ADD COLUMN pages_done integer CHECK (pages_done >= 0);
ALTER TABLE job_leases ADD COLUMN pages_total integer CHECK (pages_total >= 0);
