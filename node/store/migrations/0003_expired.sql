-- A job that reached this node only after it expired is kept, marked, so
-- that the node says it will not run it; it is not passed on.
ALTER TABLE manifests ADD COLUMN expired_on_arrival INTEGER NOT NULL DEFAULT 0;
