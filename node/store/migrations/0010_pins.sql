-- Why this node keeps a package's blocks: a job that named it, until the
-- job expires, or the operator's 'package add' here (job_id '', until_at
-- 0: kept until a delete job). Blocks of packages with no live pin and not
-- installed may be removed when the block store is over its budget.
CREATE TABLE pins (
    cid      TEXT NOT NULL,
    job_id   TEXT NOT NULL,
    until_at INTEGER NOT NULL,  -- unix seconds; 0: no end
    PRIMARY KEY (cid, job_id)
);
