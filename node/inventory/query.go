package inventory

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Cond is one --where condition: FIELD=VALUE, FIELD!=VALUE, FIELD~REGEX,
// FIELD<N, FIELD<=N, FIELD>N, FIELD>=N. Numbers take the units K, M, G, T
// (powers of 1024, as df -h prints them), KB, MB, GB, TB (powers of 1000)
// and KiB, MiB, GiB, TiB.
type Cond struct {
	Field string
	Op    string
	Value string
	num   float64
	isNum bool
	re    *regexp.Regexp
}

func (c Cond) String() string { return c.Field + c.Op + c.Value }

// ParseCond parses one condition.
func ParseCond(s string) (Cond, error) {
	i := strings.IndexAny(s, "=!~<>")
	if i <= 0 {
		return Cond{}, fmt.Errorf("condition %q: want FIELD=VALUE, FIELD!=VALUE, FIELD~REGEX, FIELD<N or FIELD>N (also <=, >=)", s)
	}
	c := Cond{Field: strings.TrimSpace(s[:i])}
	rest := s[i:]
	for _, op := range []string{"<=", ">=", "!=", "=", "~", "<", ">"} {
		if strings.HasPrefix(rest, op) {
			c.Op, c.Value = op, rest[len(op):]
			break
		}
	}
	if c.Op == "" {
		return Cond{}, fmt.Errorf("condition %q: %q is not an operator: use =, !=, ~, <, <=, > or >=", s, rest[:1])
	}
	c.num, c.isNum = ParseNumber(c.Value)
	switch c.Op {
	case "~":
		re, err := regexp.Compile(c.Value)
		if err != nil {
			return Cond{}, fmt.Errorf("condition %q: regular expression: %w", s, err)
		}
		c.re = re
	case "<", "<=", ">", ">=":
		if !c.isNum {
			return Cond{}, fmt.Errorf("condition %q: %q is not a number (write 10G, 512MB, 4 or 1.5)", s, c.Value)
		}
	}
	return c, nil
}

var numberRe = regexp.MustCompile(`^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*([KMGTP]I?B?|B)?\s*$`)

// ParseNumber reads a number with an optional unit.
func ParseNumber(s string) (float64, bool) {
	m := numberRe.FindStringSubmatch(strings.ToUpper(s[:min(len(s), 64)]))
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	unit := m[2]
	if unit == "" || unit == "B" {
		return v, true
	}
	exp := strings.IndexByte("KMGTP", unit[0]) + 1
	base := 1024.0
	if strings.HasSuffix(unit, "B") && !strings.HasSuffix(unit, "IB") {
		base = 1000
	}
	return v * math.Pow(base, float64(exp)), true
}

// Match reports whether value (ok: the machine or item has the field)
// meets the condition.
func (c Cond) Match(value string, ok bool) bool {
	if !ok {
		return c.Op == "!="
	}
	switch c.Op {
	case "~":
		return c.re.MatchString(value)
	case "=", "!=":
		eq := value == c.Value
		if !eq && c.isNum {
			if v, isNum := ParseNumber(value); isNum {
				eq = v == c.num
			}
		}
		return eq == (c.Op == "=")
	}
	v, isNum := ParseNumber(value)
	if !isNum {
		return false
	}
	switch c.Op {
	case "<":
		return v < c.num
	case "<=":
		return v <= c.num
	case ">":
		return v > c.num
	default:
		return v >= c.num
	}
}

// QueryError is a mistake in a query: an unknown field, a sum of text.
type QueryError struct{ msg string }

func (e *QueryError) Error() string { return e.msg }

func queryErrorf(format string, args ...any) error {
	return &QueryError{fmt.Sprintf(format, args...)}
}

// Machine is one machine whose inventory a node holds.
type Machine struct {
	ID         int64
	Peer       string
	ReportedAt time.Time
	// Stale: a delta arrived on a base this node did not hold, so some
	// values may be missing until the machine's next full report.
	Stale bool
}

// Source is where a query reads: the node's database.
type Source interface {
	Machines(ctx context.Context) ([]Machine, error)
	// FieldNames lists the scalar fields some machine has.
	FieldNames(ctx context.Context) ([]string, error)
	// FieldValues maps machine → value of a scalar field.
	FieldValues(ctx context.Context, field string) (map[int64]string, error)
	// Items returns the distinct items of a kind (by item id); with attr
	// set, only those whose attr equals value.
	Items(ctx context.Context, kind, attr, value string) (map[int64]Item, error)
	// Holders maps machine → the items among ids it has.
	Holders(ctx context.Context, kind string, ids []int64) (map[int64][]int64, error)
}

// Pseudo fields every machine has.
const (
	FieldPeer     = "peer"
	FieldReported = "reported"
)

// Query is one ls, sum or export request.
type Query struct {
	Where []Cond
	By    []string // sum: group by these fields
	Stats []string // sum: numeric fields to aggregate per group
	// Fields: ls and export columns.
	Fields []string
}

// DefaultFields are the columns of 'inventory ls'.
var DefaultFields = []string{"peer", "site", "role", "hostname", "os.name", "os.version", "arch", "cpu.count", "memory.total", "reported"}

// Engine answers queries over a Source.
type Engine struct{ Src Source }

// selection is the machines a query's conditions select, and for each
// item kind the conditions named, the items of each machine that matched.
type selection struct {
	machines []Machine
	items    map[string]map[int64][]Item // kind → machine → matching items
}

// KnownFields lists every field a query may name.
func (e Engine) KnownFields(ctx context.Context) ([]string, error) {
	names, err := e.Src.FieldNames(ctx)
	if err != nil {
		return nil, err
	}
	names = append(names, FieldPeer, FieldReported)
	for _, k := range Kinds {
		for _, a := range k.Attrs {
			names = append(names, k.Name+"."+a)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// check refuses a field no machine has, listing close names.
func (e Engine) check(ctx context.Context, fields []string) error {
	var known []string
	for _, f := range fields {
		if f == FieldPeer || f == FieldReported {
			continue
		}
		if kind, attr, ok := strings.Cut(f, "."); ok {
			if k, isKind := Kinds[kind]; isKind {
				if !slices.Contains(k.Attrs, attr) {
					return queryErrorf("unknown field %q: %s has %s", f, kind, strings.Join(prefixed(kind, k.Attrs), ", "))
				}
				continue
			}
		}
		if known == nil {
			var err error
			if known, err = e.KnownFields(ctx); err != nil {
				return err
			}
		}
		if !slices.Contains(known, f) {
			if close := CloseNames(f, known, 5); len(close) > 0 {
				return queryErrorf("unknown field %q: did you mean %s?", f, strings.Join(close, ", "))
			}
			return queryErrorf("unknown field %q: no machine reported it ('swdist inventory fields' lists them)", f)
		}
	}
	return nil
}

func prefixed(kind string, attrs []string) []string {
	out := make([]string, len(attrs))
	for i, a := range attrs {
		out[i] = kind + "." + a
	}
	return out
}

// CloseNames are the names in known nearest to name: by edit distance, or
// sharing its last part ("version" → os.version, software.version).
func CloseNames(name string, known []string, limit int) []string {
	type scored struct {
		name string
		d    int
	}
	var out []scored
	last := name[strings.LastIndexByte(name, '.')+1:]
	for _, k := range known {
		d := levenshtein(name, k)
		if d > max(2, len(name)/3) {
			if !strings.HasSuffix(k, "."+last) && !strings.HasPrefix(k, name) {
				continue
			}
			d = 3 + len(k)
		}
		out = append(out, scored{k, d})
	}
	slices.SortFunc(out, func(a, b scored) int { return cmp.Or(cmp.Compare(a.d, b.d), strings.Compare(a.name, b.name)) })
	var names []string
	for _, s := range out[:min(limit, len(out))] {
		names = append(names, s.name)
	}
	return names
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (e Engine) selectMachines(ctx context.Context, q Query, itemKinds []string) (selection, error) {
	fields := slices.Concat(q.By, q.Stats, q.Fields)
	for _, c := range q.Where {
		fields = append(fields, c.Field)
	}
	if err := e.check(ctx, fields); err != nil {
		return selection{}, err
	}
	ms, err := e.Src.Machines(ctx)
	if err != nil {
		return selection{}, err
	}
	keep := map[int64]bool{}
	for _, m := range ms {
		keep[m.ID] = true
	}
	byKind := map[string][]Cond{}
	for _, c := range q.Where {
		if kind, attr, ok := strings.Cut(c.Field, "."); ok {
			if _, isKind := Kinds[kind]; isKind {
				byKind[kind] = append(byKind[kind], Cond{Field: attr, Op: c.Op, Value: c.Value, num: c.num, isNum: c.isNum, re: c.re})
				continue
			}
		}
		var vals map[int64]string
		switch c.Field {
		case FieldPeer:
			vals = map[int64]string{}
			for _, m := range ms {
				vals[m.ID] = m.Peer
			}
		case FieldReported:
			vals = map[int64]string{}
			for _, m := range ms {
				vals[m.ID] = strconv.FormatInt(m.ReportedAt.Unix(), 10)
			}
		default:
			if vals, err = e.Src.FieldValues(ctx, c.Field); err != nil {
				return selection{}, err
			}
		}
		for id := range keep {
			v, ok := vals[id]
			if !c.Match(v, ok) {
				delete(keep, id)
			}
		}
	}
	for _, k := range itemKinds {
		if _, ok := byKind[k]; !ok {
			byKind[k] = nil
		}
	}
	sel := selection{items: map[string]map[int64][]Item{}}
	for _, kind := range slices.Sorted(maps.Keys(byKind)) {
		conds := byKind[kind]
		// Push the first equality down to the database's index.
		var attr, value string
		for _, c := range conds {
			if c.Op == "=" {
				attr, value = c.Field, c.Value
				break
			}
		}
		items, err := e.Src.Items(ctx, kind, attr, value)
		if err != nil {
			return selection{}, err
		}
		var ids []int64
		for id, it := range items {
			ok := true
			for _, c := range conds {
				v, has := it[c.Field]
				if !c.Match(v, has && v != "") {
					ok = false
					break
				}
			}
			if ok {
				ids = append(ids, id)
			}
		}
		holders, err := e.Src.Holders(ctx, kind, ids)
		if err != nil {
			return selection{}, err
		}
		per := map[int64][]Item{}
		for m, its := range holders {
			if !keep[m] {
				continue
			}
			for _, id := range its {
				per[m] = append(per[m], items[id])
			}
		}
		sel.items[kind] = per
		if len(conds) > 0 {
			for id := range keep {
				if len(per[id]) == 0 {
					delete(keep, id)
				}
			}
		}
	}
	for _, m := range ms {
		if keep[m.ID] {
			sel.machines = append(sel.machines, m)
		}
	}
	return sel, nil
}

// itemKinds are the item kinds named among fields.
func itemKinds(fields []string) []string {
	var out []string
	for _, f := range fields {
		if kind, _, ok := strings.Cut(f, "."); ok {
			if _, isKind := Kinds[kind]; isKind && !slices.Contains(out, kind) {
				out = append(out, kind)
			}
		}
	}
	return out
}

// values is what machine m has for field: one value for a scalar, the
// distinct values of its selected items for an item field.
func (e Engine) values(sel selection, scalars map[string]map[int64]string, m Machine, field string) []string {
	switch field {
	case FieldPeer:
		return []string{m.Peer}
	case FieldReported:
		return []string{m.ReportedAt.UTC().Format(time.RFC3339)}
	}
	if kind, attr, ok := strings.Cut(field, "."); ok {
		if _, isKind := Kinds[kind]; isKind {
			var out []string
			for _, it := range sel.items[kind][m.ID] {
				if v := it[attr]; v != "" {
					out = append(out, v)
				}
			}
			slices.Sort(out)
			return slices.Compact(out)
		}
	}
	if v, ok := scalars[field][m.ID]; ok {
		return []string{v}
	}
	return nil
}

func (e Engine) loadScalars(ctx context.Context, fields []string) (map[string]map[int64]string, error) {
	out := map[string]map[int64]string{}
	for _, f := range fields {
		if f == FieldPeer || f == FieldReported || len(itemKinds([]string{f})) > 0 {
			continue
		}
		if _, done := out[f]; done {
			continue
		}
		vals, err := e.Src.FieldValues(ctx, f)
		if err != nil {
			return nil, err
		}
		out[f] = vals
	}
	return out, nil
}

// Row is one machine in 'inventory ls' and 'export'.
type Row struct {
	Peer   string              `json:"peer_id"`
	Stale  bool                `json:"stale,omitempty"`
	Values map[string][]string `json:"values"`
}

// List answers 'inventory ls': the machines that meet the conditions,
// with the values of the query's fields.
func (e Engine) List(ctx context.Context, q Query) ([]Row, error) {
	if len(q.Fields) == 0 {
		q.Fields = DefaultFields
	}
	sel, err := e.selectMachines(ctx, q, itemKinds(q.Fields))
	if err != nil {
		return nil, err
	}
	scalars, err := e.loadScalars(ctx, q.Fields)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(sel.machines))
	for _, m := range sel.machines {
		r := Row{Peer: m.Peer, Stale: m.Stale, Values: map[string][]string{}}
		for _, f := range q.Fields {
			r.Values[f] = e.values(sel, scalars, m, f)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// Agg is the numeric aggregate of a field over a group.
type Agg struct {
	N   int     `json:"n"`
	Sum float64 `json:"sum"`
	Min float64 `json:"min"`
	Max float64 `json:"max"`
	Avg float64 `json:"avg"`
}

func (a *Agg) add(v float64) {
	if a.N == 0 || v < a.Min {
		a.Min = v
	}
	if a.N == 0 || v > a.Max {
		a.Max = v
	}
	a.N++
	a.Sum += v
	a.Avg = a.Sum / float64(a.N)
}

// SumRow is one group of 'inventory sum'.
type SumRow struct {
	Value  string          `json:"value"`  // the group's values, joined with " / "
	Values []string        `json:"values"` // one per --by field
	Count  int             `json:"count"`  // machines in the group
	Stats  map[string]*Agg `json:"stats,omitempty"`
}

// Sum is the answer to 'inventory sum'.
type Sum struct {
	By       []string `json:"by"`
	Machines int      `json:"machines"` // that met the conditions
	Rows     []SumRow `json:"rows"`
	// Totals aggregates each --stat field, and each numeric --by field,
	// over all the machines that met the conditions.
	Totals map[string]*Agg `json:"totals,omitempty"`
}

// None stands for a machine without the field.
const None = "(none)"

// Sum answers 'inventory sum': how many machines have each value (or
// combination of values) of the --by fields, and the numeric aggregates
// of the --stat fields per group.
func (e Engine) Sum(ctx context.Context, q Query) (Sum, error) {
	if len(q.By) == 0 {
		return Sum{}, queryErrorf("name a field to group by with --by (e.g. --by os.version)")
	}
	for _, f := range q.Stats {
		if !IsNumeric(f) {
			return Sum{}, queryErrorf("--stat %s: not a numeric field; numeric fields are %s and %s", f,
				strings.Join(NumericFields, ", "), "disk.size, disk.free, disk.used_percent, net.mtu")
		}
	}
	all := slices.Concat(q.By, q.Stats)
	sel, err := e.selectMachines(ctx, q, itemKinds(all))
	if err != nil {
		return Sum{}, err
	}
	scalars, err := e.loadScalars(ctx, all)
	if err != nil {
		return Sum{}, err
	}
	out := Sum{By: q.By, Machines: len(sel.machines), Rows: []SumRow{}, Totals: map[string]*Agg{}}
	groups := map[string]*SumRow{}
	for _, m := range sel.machines {
		combos := [][]string{{}}
		for _, f := range q.By {
			vals := e.values(sel, scalars, m, f)
			if len(vals) == 0 {
				vals = []string{None}
			}
			var next [][]string
			for _, c := range combos {
				for _, v := range vals {
					next = append(next, append(slices.Clone(c), v))
				}
			}
			combos = next
		}
		for _, c := range combos {
			key := strings.Join(c, "\x00")
			g := groups[key]
			if g == nil {
				g = &SumRow{Value: strings.Join(c, " / "), Values: c, Stats: map[string]*Agg{}}
				groups[key] = g
			}
			g.Count++
			for _, f := range q.Stats {
				for _, v := range e.values(sel, scalars, m, f) {
					if x, ok := ParseNumber(v); ok {
						if g.Stats[f] == nil {
							g.Stats[f] = &Agg{}
						}
						g.Stats[f].add(x)
					}
				}
			}
		}
		for _, f := range all {
			if !IsNumeric(f) {
				continue
			}
			for _, v := range e.values(sel, scalars, m, f) {
				if x, ok := ParseNumber(v); ok {
					if out.Totals[f] == nil {
						out.Totals[f] = &Agg{}
					}
					out.Totals[f].add(x)
				}
			}
		}
	}
	for _, g := range groups {
		if len(g.Stats) == 0 {
			g.Stats = nil
		}
		out.Rows = append(out.Rows, *g)
	}
	slices.SortFunc(out.Rows, func(a, b SumRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Value, b.Value))
	})
	if len(out.Totals) == 0 {
		out.Totals = nil
	}
	return out, nil
}
