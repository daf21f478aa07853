-- While a destination fetches a job's package, it reports how far it got:
-- bytes of the package held there and the package's total (0 and 0 for
-- every other state).
ALTER TABLE job_states ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_states ADD COLUMN total INTEGER NOT NULL DEFAULT 0;
