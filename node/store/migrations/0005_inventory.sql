-- Inventory: what each machine of this node's subtree (and the node itself)
-- reported. A machine is kept by its peer ID; values are kept with the time
-- they last changed, and every change after the first report is recorded in
-- inv_history.
CREATE TABLE inv_machines (
    id          INTEGER PRIMARY KEY,
    peer_id     TEXT NOT NULL UNIQUE,
    seq         INTEGER NOT NULL DEFAULT 0, -- the newest report applied
    digest      BLOB,                       -- of the inventory after it
    reported_at INTEGER NOT NULL,           -- unix ms of that report
    full_at     INTEGER NOT NULL DEFAULT 0, -- unix ms of the newest full report
    stale       INTEGER NOT NULL DEFAULT 0, -- a delta came on a base this node did not hold
    via         TEXT NOT NULL DEFAULT ''    -- the child it came through
);

-- Scalar fields: one value per machine.
CREATE TABLE inv_fields (
    machine    INTEGER NOT NULL REFERENCES inv_machines(id),
    field      TEXT NOT NULL,
    value      TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (machine, field)
) WITHOUT ROWID;
CREATE INDEX inv_fields_by_field ON inv_fields(field, value);

-- Items (software, disks, interfaces), each stored once however many
-- machines have it: attrs is its canonical JSON.
CREATE TABLE inv_items (
    id    INTEGER PRIMARY KEY,
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    attrs TEXT NOT NULL,
    UNIQUE (kind, attrs)
);
CREATE INDEX inv_items_by_key ON inv_items(kind, key);

-- Each attribute of each item, for filters that use an index.
CREATE TABLE inv_item_attrs (
    item  INTEGER NOT NULL REFERENCES inv_items(id),
    attr  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (item, attr)
) WITHOUT ROWID;
CREATE INDEX inv_item_attrs_by_value ON inv_item_attrs(attr, value);

-- Which machine has which item, since when.
CREATE TABLE inv_has (
    machine INTEGER NOT NULL,
    item    INTEGER NOT NULL,
    since   INTEGER NOT NULL,
    PRIMARY KEY (machine, item)
) WITHOUT ROWID;
CREATE INDEX inv_has_by_item ON inv_has(item, machine);

-- Changes after a machine's first report: a field's old and new value, or
-- an item added (new) or removed (old).
CREATE TABLE inv_history (
    machine INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    field   TEXT NOT NULL,
    old     TEXT,
    new     TEXT
);
CREATE INDEX inv_history_by_machine ON inv_history(machine, at);

-- This node's own inventory as last reported: the base of its next delta.
CREATE TABLE inv_self (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          INTEGER NOT NULL,
    snapshot     BLOB NOT NULL,
    collected_at INTEGER NOT NULL,
    full_at      INTEGER NOT NULL
);
