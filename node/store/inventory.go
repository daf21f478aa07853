package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/swdist/swdist/hierarchy/report"
	"github.com/swdist/swdist/node/inventory"
)

// KindInventory is the report kind of an inventory delta.
const KindInventory = "inventory"

var _ inventory.Source = (*Store)(nil)

// invTx applies inventory reports within one Apply transaction.
type invTx struct {
	s     *Store
	tx    *tx
	fresh map[string]int64 // items created in this transaction
	gone  map[string]bool  // cache keys of items deleted in it
	stmts map[string]*stmt
}

const (
	qMachine     = `SELECT id, seq, digest, stale FROM inv_machines WHERE peer_id = ?`
	qNewMachine  = `INSERT INTO inv_machines(peer_id, reported_at) VALUES(?, ?) RETURNING id`
	qSaveMachine = `UPDATE inv_machines SET seq = ?, digest = ?, reported_at = ?, stale = ?, via = ?, full_at = CASE WHEN ? <> 0 THEN ? ELSE full_at END WHERE id = ?`
	qFields      = `SELECT field, value FROM inv_fields WHERE machine = ?`
	qSetField    = `INSERT INTO inv_fields(machine, field, value, changed_at) VALUES(?, ?, ?, ?)
		ON CONFLICT(machine, field) DO UPDATE SET value = excluded.value, changed_at = excluded.changed_at WHERE inv_fields.value != excluded.value`
	qUnsetField = `DELETE FROM inv_fields WHERE machine = ? AND field = ?`
	qItemID     = `SELECT id FROM inv_items WHERE kind = ? AND attrs = ?`
	qNewItem    = `INSERT INTO inv_items(kind, key, attrs) VALUES(?, ?, ?) RETURNING id`
	qItemAttr   = `INSERT INTO inv_item_attrs(item, attr, value) VALUES(?, ?, ?)`
	qHas        = `INSERT INTO inv_has(machine, item, since) VALUES(?, ?, ?) ON CONFLICT DO NOTHING`
	qHeld       = `SELECT h.item, i.kind, i.key, i.attrs FROM inv_has h JOIN inv_items i ON i.id = h.item WHERE h.machine = ?`
	qHeldKey    = `SELECT h.item, i.attrs FROM inv_has h JOIN inv_items i ON i.id = h.item WHERE h.machine = ? AND i.kind = ? AND i.key = ?`
	qDropHas    = `DELETE FROM inv_has WHERE machine = ? AND item = ?`
	qHeldBy     = `SELECT 1 FROM inv_has WHERE item = ? LIMIT 1`
	qDropAttrs  = `DELETE FROM inv_item_attrs WHERE item = ?`
	qDropItem   = `DELETE FROM inv_items WHERE id = ?`
	qHistory    = `INSERT INTO inv_history(machine, at, field, old, new) VALUES(?, ?, ?, ?, ?)`
)

// hasMany gives a machine items.
var hasMany = batchSQL{
	sqlite:   `INSERT INTO inv_has(machine, item, since) SELECT ?1, value, ?2 FROM json_each(?3) WHERE true ON CONFLICT DO NOTHING`,
	postgres: `INSERT INTO inv_has(machine, item, since) SELECT $1, unnest($3::bigint[]), $2 ON CONFLICT DO NOTHING`,
}

// holders reads which machines have items.
var holders = batchSQL{
	sqlite:   `SELECT h.machine, h.item FROM json_each(?) j JOIN inv_has h ON h.item = j.value`,
	postgres: `SELECT machine, item FROM inv_has WHERE item = ANY($1::bigint[])`,
}

func (t *invTx) stmt(ctx context.Context, q string) (*stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	st, err := t.tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	t.stmts[q] = st
	return st, nil
}

func (t *invTx) exec(ctx context.Context, q string, args ...any) error {
	st, err := t.stmt(ctx, q)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, args...)
	return err
}

func (t *invTx) close() {
	for _, st := range t.stmts {
		st.Close()
	}
}

// commit keeps the ids of the items this transaction created.
func (t *invTx) commit() {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if len(t.s.itemIDs) > maxCachedItems {
		clear(t.s.itemIDs)
	}
	maps.Copy(t.s.itemIDs, t.fresh)
	for k := range t.gone {
		delete(t.s.itemIDs, k)
	}
}

// maxCachedItems bounds the cache of item ids: the distinct software of a
// large estate is some tens of thousands.
const maxCachedItems = 500_000

// drop takes an item from a machine, and deletes the item when no machine
// has it any more (a disk's free space makes a new item at each change).
func (t *invTx) drop(ctx context.Context, machine, item int64, kind, attrs string) error {
	if err := t.exec(ctx, qDropHas, machine, item); err != nil {
		return err
	}
	st, err := t.stmt(ctx, qHeldBy)
	if err != nil {
		return err
	}
	var one int
	switch err := st.QueryRowContext(ctx, item).Scan(&one); {
	case err == nil:
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	if err := t.exec(ctx, qDropAttrs, item); err != nil {
		return err
	}
	if err := t.exec(ctx, qDropItem, item); err != nil {
		return err
	}
	var it inventory.Item
	if err := json.Unmarshal([]byte(attrs), &it); err != nil {
		return fmt.Errorf("item %d: %w", item, err)
	}
	ck := cacheKey(kind, it)
	delete(t.fresh, ck)
	t.gone[ck] = true
	return nil
}

// itemID is the id of an item, created if no machine had it.
func (t *invTx) itemID(ctx context.Context, kind string, it inventory.Item) (int64, error) {
	ck := cacheKey(kind, it)
	t.s.mu.Lock()
	id, ok := t.s.itemIDs[ck]
	t.s.mu.Unlock()
	if ok && !t.gone[ck] {
		return id, nil
	}
	if id, ok := t.fresh[ck]; ok {
		return id, nil
	}
	st, err := t.stmt(ctx, qItemID)
	if err != nil {
		return 0, err
	}
	attrs, err := json.Marshal(it) // keys sorted: canonical
	if err != nil {
		return 0, err
	}
	err = st.QueryRowContext(ctx, kind, string(attrs)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		if st, err = t.stmt(ctx, qNewItem); err != nil {
			return 0, err
		}
		if err = st.QueryRowContext(ctx, kind, inventory.Kinds[kind].KeyOf(it), string(attrs)).Scan(&id); err != nil {
			return 0, err
		}
		for a, v := range it {
			if err := t.exec(ctx, qItemAttr, id, a, v); err != nil {
				return 0, err
			}
		}
	} else if err != nil {
		return 0, err
	}
	t.fresh[ck] = id
	return id, nil
}

// cacheKey names an item by kind and attributes, as its canonical JSON
// does, more cheaply.
func cacheKey(kind string, it inventory.Item) string {
	var b strings.Builder
	b.WriteString(kind)
	for _, a := range inventory.Kinds[kind].Attrs {
		b.WriteByte(0)
		b.WriteString(it[a])
	}
	return b.String()
}

type machineRow struct {
	id     int64
	seq    uint64
	digest []byte
	stale  bool
	isNew  bool
}

// apply applies one machine's inventory report. A report older than one
// already applied (a resend) changes nothing.
func (t *invTx) apply(ctx context.Context, origin, via string, r report.Report, d inventory.Delta) error {
	var m machineRow
	st, err := t.stmt(ctx, qMachine)
	if err != nil {
		return err
	}
	err = st.QueryRowContext(ctx, origin).Scan(&m.id, &m.seq, &m.digest, &m.stale)
	if errors.Is(err, sql.ErrNoRows) {
		if st, err = t.stmt(ctx, qNewMachine); err != nil {
			return err
		}
		if err := st.QueryRowContext(ctx, origin, r.At).Scan(&m.id); err != nil {
			return err
		}
		m.isNew = true
	} else if err != nil {
		return err
	}
	if !m.isNew && d.Seq <= m.seq {
		return nil
	}
	history := !m.isNew // changes are recorded after the first report
	if d.Full {
		if err := t.replace(ctx, m, r.At, d, history); err != nil {
			return err
		}
		m.stale = false
	} else {
		if !inventory.SameDigest(d.Base, m.digest) {
			m.stale = true
		}
		if err := t.patch(ctx, m, r.At, d, history); err != nil {
			return err
		}
	}
	return t.exec(ctx, qSaveMachine, d.Seq, d.Digest, r.At, m.stale, via, d.Full, r.At, m.id)
}

// fieldsOf reads a machine's scalar fields.
func (t *invTx) fieldsOf(ctx context.Context, machine int64) (map[string]string, error) {
	st, err := t.stmt(ctx, qFields)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, machine)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var f, v string
		if err := rows.Scan(&f, &v); err != nil {
			return nil, err
		}
		out[f] = v
	}
	return out, rows.Err()
}

// replace makes a machine's stored inventory what a full report says.
func (t *invTx) replace(ctx context.Context, m machineRow, at int64, d inventory.Delta, history bool) error {
	old := map[string]string{}
	if !m.isNew {
		var err error
		if old, err = t.fieldsOf(ctx, m.id); err != nil {
			return err
		}
	}
	var unset []string
	for f := range old {
		if _, ok := d.Set[f]; !ok {
			unset = append(unset, f)
		}
	}
	set := map[string]string{}
	for f, v := range d.Set {
		if ov, ok := old[f]; !ok || ov != v {
			set[f] = v
		}
	}
	if err := t.fields(ctx, m.id, at, set, unset, old, history); err != nil {
		return err
	}
	type held struct {
		kind, key, attrs string
	}
	oldKeys := map[string]bool{} // kind|key
	have := map[int64]held{}
	if !m.isNew {
		st, err := t.stmt(ctx, qHeld)
		if err != nil {
			return err
		}
		rows, err := st.QueryContext(ctx, m.id)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var kind, key, attrs string
			if err := rows.Scan(&id, &kind, &key, &attrs); err != nil {
				rows.Close()
				return err
			}
			have[id] = held{kind, key, attrs}
			oldKeys[kind+"|"+key] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	// Only items that come and go are history, not a disk's free space:
	// an item whose key stays is a change of attributes.
	keep, newKeys := map[int64]bool{}, map[string]bool{}
	var added []int64
	for _, kind := range slices.Sorted(maps.Keys(d.Add)) {
		for _, it := range d.Add[kind] {
			id, err := t.itemID(ctx, kind, it)
			if err != nil {
				return err
			}
			keep[id] = true
			key := inventory.Kinds[kind].KeyOf(it)
			newKeys[kind+"|"+key] = true
			if _, ok := have[id]; ok {
				continue
			}
			added = append(added, id)
			if history && !oldKeys[kind+"|"+key] {
				if err := t.exec(ctx, qHistory, m.id, at, kind, nil, describe(kind, it)); err != nil {
					return err
				}
			}
		}
	}
	if len(added) > 0 {
		// One statement for a machine's items: a full inventory is
		// thousands of them, and a statement per row costs more than the
		// row.
		rows := make([][]any, len(added))
		for i, id := range added {
			rows[i] = []any{id}
		}
		if err := t.tx.execBatch(ctx, hasMany, []any{m.id, at}, rows); err != nil {
			return err
		}
	}
	for id, h := range have {
		if keep[id] {
			continue
		}
		if err := t.drop(ctx, m.id, id, h.kind, h.attrs); err != nil {
			return err
		}
		if newKeys[h.kind+"|"+h.key] {
			continue
		}
		var it inventory.Item
		_ = json.Unmarshal([]byte(h.attrs), &it)
		if err := t.exec(ctx, qHistory, m.id, at, h.kind, describe(h.kind, it), nil); err != nil {
			return err
		}
	}
	return nil
}

// patch applies a delta to a machine's stored inventory.
func (t *invTx) patch(ctx context.Context, m machineRow, at int64, d inventory.Delta, history bool) error {
	old := map[string]string{}
	if history && (len(d.Set) > 0 || len(d.Unset) > 0) {
		var err error
		if old, err = t.fieldsOf(ctx, m.id); err != nil {
			return err
		}
	}
	if err := t.fields(ctx, m.id, at, d.Set, d.Unset, old, history); err != nil {
		return err
	}
	// drop takes the machine's items of kind with key, but except, and
	// says how many it took.
	drop := func(kind, key string, except int64) (int, error) {
		st, err := t.stmt(ctx, qHeldKey)
		if err != nil {
			return 0, err
		}
		rows, err := st.QueryContext(ctx, m.id, kind, key)
		if err != nil {
			return 0, err
		}
		type gone struct {
			id    int64
			attrs string
		}
		var drops []gone
		for rows.Next() {
			var g gone
			if err := rows.Scan(&g.id, &g.attrs); err != nil {
				rows.Close()
				return 0, err
			}
			if g.id != except {
				drops = append(drops, g)
			}
		}
		rows.Close()
		for _, g := range drops {
			if err := t.drop(ctx, m.id, g.id, kind, g.attrs); err != nil {
				return 0, err
			}
			if history && except == 0 {
				var it inventory.Item
				_ = json.Unmarshal([]byte(g.attrs), &it)
				if err := t.exec(ctx, qHistory, m.id, at, kind, describe(kind, it), nil); err != nil {
					return 0, err
				}
			}
		}
		return len(drops), nil
	}
	for kind, keys := range d.Del {
		for _, key := range keys {
			if _, err := drop(kind, key, 0); err != nil {
				return err
			}
		}
	}
	for kind, its := range d.Add {
		for _, it := range its {
			id, err := t.itemID(ctx, kind, it)
			if err != nil {
				return err
			}
			// A changed item replaces the one with its key; only items
			// that come and go are history, not a disk's free space.
			replaced, err := drop(kind, inventory.Kinds[kind].KeyOf(it), id)
			if err != nil {
				return err
			}
			if err := t.exec(ctx, qHas, m.id, id, at); err != nil {
				return err
			}
			if history && replaced == 0 {
				if err := t.exec(ctx, qHistory, m.id, at, kind, nil, describe(kind, it)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (t *invTx) fields(ctx context.Context, machine, at int64, set map[string]string, unset []string, old map[string]string, history bool) error {
	for _, f := range slices.Sorted(maps.Keys(set)) {
		if err := t.exec(ctx, qSetField, machine, f, set[f], at); err != nil {
			return err
		}
		if ov, ok := old[f]; history && (!ok || ov != set[f]) {
			var o any
			if ok {
				o = ov
			}
			if err := t.exec(ctx, qHistory, machine, at, f, o, set[f]); err != nil {
				return err
			}
		}
	}
	for _, f := range unset {
		if err := t.exec(ctx, qUnsetField, machine, f); err != nil {
			return err
		}
		if ov, ok := old[f]; history && ok {
			if err := t.exec(ctx, qHistory, machine, at, f, ov, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// describe is an item in one line, for history.
func describe(kind string, it inventory.Item) string {
	switch kind {
	case "software":
		s := it["name"] + " " + it["version"]
		if it["arch"] != "" {
			s += " " + it["arch"]
		}
		return s + " (" + it["source"] + ")"
	case "disk":
		return it["mount"]
	}
	return inventory.Kinds[kind].KeyOf(it)
}

// Machines implements inventory.Source.
func (s *Store) Machines(ctx context.Context) ([]inventory.Machine, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, peer_id, reported_at, stale FROM inv_machines ORDER BY peer_id`)
	if err != nil {
		return nil, fmt.Errorf("read machines: %w", err)
	}
	defer rows.Close()
	var out []inventory.Machine
	for rows.Next() {
		var m inventory.Machine
		var at int64
		if err := rows.Scan(&m.ID, &m.Peer, &at, &m.Stale); err != nil {
			return nil, err
		}
		m.ReportedAt = time.UnixMilli(at).UTC()
		out = append(out, m)
	}
	return out, rows.Err()
}

// FieldNames implements inventory.Source.
func (s *Store) FieldNames(ctx context.Context) ([]string, error) {
	// A skip-scan over the (field, value) index: one probe per name.
	rows, err := s.db.QueryContext(ctx, `WITH RECURSIVE f(name) AS (
		SELECT min(field) FROM inv_fields
		UNION ALL SELECT (SELECT min(field) FROM inv_fields WHERE field > f.name) FROM f WHERE f.name IS NOT NULL)
		SELECT name FROM f WHERE name IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("read field names: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// FieldValues implements inventory.Source.
func (s *Store) FieldValues(ctx context.Context, field string) (map[int64]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT machine, value FROM inv_fields WHERE field = ?`, field)
	if err != nil {
		return nil, fmt.Errorf("read field %s: %w", field, err)
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var v string
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		out[id] = v
	}
	return out, rows.Err()
}

// Items implements inventory.Source.
func (s *Store) Items(ctx context.Context, kind, attr, value string) (map[int64]inventory.Item, error) {
	var rows *sql.Rows
	var err error
	if attr != "" {
		rows, err = s.db.QueryContext(ctx, `SELECT i.id, i.attrs FROM inv_item_attrs a JOIN inv_items i ON i.id = a.item
			WHERE a.attr = ? AND a.value = ? AND i.kind = ?`, attr, value, kind)
	} else {
		rows, err = s.db.QueryContext(ctx, `SELECT id, attrs FROM inv_items WHERE kind = ?`, kind)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s items: %w", kind, err)
	}
	defer rows.Close()
	out := map[int64]inventory.Item{}
	for rows.Next() {
		var id int64
		var attrs string
		if err := rows.Scan(&id, &attrs); err != nil {
			return nil, err
		}
		var it inventory.Item
		if err := json.Unmarshal([]byte(attrs), &it); err != nil {
			return nil, fmt.Errorf("item %d: %w", id, err)
		}
		out[id] = it
	}
	return out, rows.Err()
}

// Holders implements inventory.Source.
func (s *Store) Holders(ctx context.Context, kind string, ids []int64) (map[int64][]int64, error) {
	out := map[int64][]int64{}
	if len(ids) == 0 {
		return out, nil
	}
	list := make([][]any, len(ids))
	for i, id := range ids {
		list[i] = []any{id}
	}
	rows, err := s.db.queryBatch(ctx, holders, nil, list)
	if err != nil {
		return nil, fmt.Errorf("read holders of %d %s items: %w", len(ids), kind, err)
	}
	defer rows.Close()
	for rows.Next() {
		var m, it int64
		if err := rows.Scan(&m, &it); err != nil {
			return nil, err
		}
		out[m] = append(out[m], it)
	}
	return out, rows.Err()
}

// MachineInventory is everything one machine reported, as stored here.
type MachineInventory struct {
	Peer       string
	ReportedAt time.Time
	FullAt     time.Time
	Stale      bool
	Via        string
	Seq        uint64
	Fields     map[string]FieldValue
	Items      map[string][]HeldItem
	History    []Change
}

// FieldValue is a scalar value and when it last changed.
type FieldValue struct {
	Value     string
	ChangedAt time.Time
}

// HeldItem is an item and since when the machine has it.
type HeldItem struct {
	Item  inventory.Item
	Since time.Time
}

// Change is one recorded change of a machine's inventory.
type Change struct {
	At       time.Time
	Field    string
	Old, New *string
}

// ErrNoMachine: no inventory is held for that peer; ErrAmbiguous: the part
// of a peer ID given matches several.
var (
	ErrNoMachine = errors.New("no inventory held for that machine")
	ErrAmbiguous = errors.New("matches several machines")
)

// FindMachine resolves a peer ID, or a unique part of one (as 'inventory
// ls' shows them), to the peer ID of a machine with inventory here.
func (s *Store) FindMachine(ctx context.Context, q string) (string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT peer_id FROM inv_machines WHERE instr(peer_id, ?) > 0 LIMIT 6`, q)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return "", err
		}
		if p == q {
			return p, nil
		}
		found = append(found, p)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%q: %w ('swdist inventory ls' lists the machines)", q, ErrNoMachine)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%q %w (%s…): give more of the peer ID", q, ErrAmbiguous, strings.Join(found[:min(3, len(found))], ", "))
}

// Machine returns what one machine reported, with its recent history.
func (s *Store) Machine(ctx context.Context, peerID string, historyLimit int) (MachineInventory, error) {
	var m MachineInventory
	var id, rep, full int64
	err := s.db.QueryRowContext(ctx, `SELECT id, peer_id, seq, reported_at, full_at, stale, via FROM inv_machines WHERE peer_id = ?`, peerID).
		Scan(&id, &m.Peer, &m.Seq, &rep, &full, &m.Stale, &m.Via)
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("%s: %w", peerID, ErrNoMachine)
	}
	if err != nil {
		return m, err
	}
	m.ReportedAt, m.FullAt = time.UnixMilli(rep).UTC(), time.UnixMilli(full).UTC()
	m.Fields, m.Items = map[string]FieldValue{}, map[string][]HeldItem{}
	rows, err := s.db.QueryContext(ctx, `SELECT field, value, changed_at FROM inv_fields WHERE machine = ?`, id)
	if err != nil {
		return m, err
	}
	for rows.Next() {
		var f, v string
		var at int64
		if err := rows.Scan(&f, &v, &at); err != nil {
			rows.Close()
			return m, err
		}
		m.Fields[f] = FieldValue{v, time.UnixMilli(at).UTC()}
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT i.kind, i.attrs, h.since FROM inv_has h JOIN inv_items i ON i.id = h.item
		WHERE h.machine = ? ORDER BY i.kind, i.key`, id)
	if err != nil {
		return m, err
	}
	for rows.Next() {
		var kind, attrs string
		var since int64
		if err := rows.Scan(&kind, &attrs, &since); err != nil {
			rows.Close()
			return m, err
		}
		var it inventory.Item
		_ = json.Unmarshal([]byte(attrs), &it)
		m.Items[kind] = append(m.Items[kind], HeldItem{it, time.UnixMilli(since).UTC()})
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT at, field, old, new FROM inv_history WHERE machine = ? ORDER BY at DESC, rowid DESC LIMIT ?`, id, historyLimit)
	if err != nil {
		return m, err
	}
	defer rows.Close()
	for rows.Next() {
		var c Change
		var at int64
		if err := rows.Scan(&at, &c.Field, &c.Old, &c.New); err != nil {
			return m, err
		}
		c.At = time.UnixMilli(at).UTC()
		m.History = append(m.History, c)
	}
	return m, rows.Err()
}

// InventorySelf is this node's own inventory as last reported.
type InventorySelf struct {
	Seq         uint64
	Snapshot    []byte
	CollectedAt time.Time
	FullAt      time.Time
}

// LoadInventorySelf returns this node's last reported inventory (ok false
// if it never reported one).
func (s *Store) LoadInventorySelf(ctx context.Context) (InventorySelf, bool, error) {
	var st InventorySelf
	var col, full int64
	err := s.db.QueryRowContext(ctx, `SELECT seq, snapshot, collected_at, full_at FROM inv_self WHERE id = 1`).Scan(&st.Seq, &st.Snapshot, &col, &full)
	if errors.Is(err, sql.ErrNoRows) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("read own inventory: %w", err)
	}
	st.CollectedAt, st.FullAt = time.UnixMilli(col), time.UnixMilli(full)
	return st, true, nil
}

// ReportOwnInventory applies this node's own inventory report, queues it
// for the parent (forward) and records it as the base of the next delta,
// all in one transaction: a crash leaves either all or none of it.
func (s *Store) ReportOwnInventory(ctx context.Context, r report.Report, forward bool, self InventorySelf) error {
	return s.apply(ctx, r.Origin, []report.Report{r}, forward, func(tx *tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO inv_self(id, seq, snapshot, collected_at, full_at) VALUES(1, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, snapshot = excluded.snapshot,
				collected_at = excluded.collected_at, full_at = excluded.full_at`,
			self.Seq, self.Snapshot, self.CollectedAt.UnixMilli(), self.FullAt.UnixMilli())
		return err
	})
}
