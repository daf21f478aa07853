-- Status ingestion appends the transitions of each batch to job_history as
-- one row per job (a JSON array of [peer, state, at, reason, exit code,
-- output, via]): sequential pages, one row per batch, however many
-- destinations. The latest state of each destination is kept in memory and
-- written to job_states in key order now and then; what was not written
-- yet is replayed from job_history at open.
CREATE TABLE job_transitions (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL,
    records TEXT NOT NULL
);
INSERT INTO job_transitions(job_id, records)
    SELECT job_id, json_group_array(json_array(peer_id, state, at, '', 0, '', '')) FROM job_history GROUP BY job_id;
DROP TABLE job_history;
CREATE INDEX job_transitions_by_job ON job_transitions(job_id);

-- Counters of the store itself: job_states_upto is the last row of
-- job_transitions reflected in job_states.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO store_meta(key, value) SELECT 'job_states_upto', coalesce(max(id), 0) FROM job_transitions;
