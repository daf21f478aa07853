-- Software that swdist's install jobs installed on this machine.
CREATE TABLE installed (
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    cid          TEXT NOT NULL,
    path         TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    installed_at INTEGER NOT NULL,  -- unix seconds
    PRIMARY KEY (name, version)
);
