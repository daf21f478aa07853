package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// The store runs on SQLite (the default, a file in the node's home) or on
// PostgreSQL (a postgres:// DSN), with one schema and one set of queries.
//
// Migrations and queries are written in SQLite's dialect, kept to what
// PostgreSQL also accepts once these mechanical rules are applied (pgSchema
// for migrations, pgQuery for queries):
//
//   - placeholders ? and ?N become $1, $2, … and $N;
//   - INTEGER PRIMARY KEY [AUTOINCREMENT] becomes an identity column,
//     INTEGER becomes BIGINT, BLOB becomes BYTEA, WITHOUT ROWID is dropped;
//   - a table that has a rowid in SQLite (neither WITHOUT ROWID nor an
//     INTEGER PRIMARY KEY) gets a rowid identity column, so that ORDER BY
//     rowid means insertion order on both;
//   - instr() is strpos(), json_group_array() is json_agg() and
//     json_array() is json_build_array();
//   - booleans are INTEGER 0 or 1: bool arguments are sent as 0 or 1, and
//     NUL bytes, which PostgreSQL's text refuses, are sent as U+FFFD.
//
// The few statements that take a whole batch as one parameter (json_each
// in SQLite) have a PostgreSQL form with arrays (unnest) beside them:
// see batchSQL.
//
// New SQL must therefore also: write each table as "CREATE TABLE name ("
// with its closing ");" (or ") WITHOUT ROWID;") on a line of its own;
// qualify columns with their table where "excluded" could also be meant
// (ON CONFLICT … DO UPDATE … WHERE); group by every column it selects that
// is not aggregated; use no other SQLite-only function or syntax (INSERT
// OR REPLACE, max(a, b), LIMIT -1, json_* but through batchSQL). Every
// store test runs on both (storetest.Each), which is how a slip shows.

// dialect is the database behind a Store.
type dialect int

const (
	sqliteDB dialect = iota
	postgresDB
)

func (d dialect) String() string {
	if d == postgresDB {
		return "PostgreSQL"
	}
	return "SQLite"
}

// IsPostgres reports whether dsn names a PostgreSQL database rather than
// a SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// A DSN is one of the forms below; anything else with a URL scheme is
// refused, rather than taken for a file of that name.
const dsnForms = "a SQLite file (a path, relative to the home, or sqlite:PATH) or a PostgreSQL URL (postgres://USER@HOST/DB or postgresql://USER@HOST/DB)"

// urlScheme matches the scheme of a URL: "mysql:", "file:"; one letter
// is a drive, not a scheme.
var urlScheme = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]+):`)

// CheckDSN says whether Open takes dsn: a PostgreSQL URL, sqlite:PATH,
// or a path without a URL scheme (a file whose name has one is
// ./NAME or sqlite:NAME).
func CheckDSN(dsn string) error {
	if dsn == "" {
		return fmt.Errorf("no database given: want %s", dsnForms)
	}
	if IsPostgres(dsn) {
		return nil
	}
	m := urlScheme.FindStringSubmatch(dsn)
	if m == nil || m[1] == "sqlite" {
		return nil
	}
	shown := dsn
	if u, err := url.Parse(dsn); err == nil {
		shown = u.Redacted()
	} else if _, after, ok := strings.Cut(dsn, "@"); ok {
		shown = m[1] + "://…@" + after
	}
	return fmt.Errorf("database %q: %s: is not a database swdist can use; want %s", shown, m[1], dsnForms)
}

// SQLitePath is the file a SQLite DSN names (sqlite:PATH or PATH).
func SQLitePath(dsn string) string { return strings.TrimPrefix(dsn, "sqlite:") }

// db is the database with every statement in its dialect.
type db struct {
	*sql.DB
	d dialect
}

// tx is a transaction with every statement in its dialect.
type tx struct {
	*sql.Tx
	d dialect
}

var pgQueries sync.Map // SQLite text → PostgreSQL text

// q is query in the database's dialect.
func (d dialect) q(query string) string {
	if d != postgresDB {
		return query
	}
	if t, ok := pgQueries.Load(query); ok {
		return t.(string)
	}
	t := pgQuery(query)
	if len(query) < 4096 { // not the long lists of placeholders some build
		pgQueries.Store(query, t)
	}
	return t
}

// args are arguments as the database takes them (a copy when they change:
// the caller's slice is left alone).
func (d dialect) args(args []any) []any {
	if d != postgresDB {
		return args
	}
	out := args
	for i, a := range args {
		var v any
		switch a := a.(type) {
		case bool:
			v = boolInt(a)
		case string:
			if t := pgText(a); t != a {
				v = t
			}
		}
		if v == nil {
			continue
		}
		if &out[0] == &args[0] {
			out = slices.Clone(args)
		}
		out[i] = v
	}
	return out
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// pgText is s as PostgreSQL's text takes it: no NUL bytes, valid UTF-8.
func pgText(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func (b *db) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return b.DB.ExecContext(ctx, b.d.q(query), b.d.args(args)...)
}

func (b *db) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return b.DB.QueryContext(ctx, b.d.q(query), b.d.args(args)...)
}

func (b *db) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return b.DB.QueryRowContext(ctx, b.d.q(query), b.d.args(args)...)
}

func (b *db) QueryRow(query string, args ...any) *sql.Row {
	return b.QueryRowContext(context.Background(), query, args...)
}

func (b *db) Exec(query string, args ...any) (sql.Result, error) {
	return b.ExecContext(context.Background(), query, args...)
}

func (b *db) Query(query string, args ...any) (*sql.Rows, error) {
	return b.QueryContext(context.Background(), query, args...)
}

func (b *db) BeginTx(ctx context.Context, opts *sql.TxOptions) (*tx, error) {
	t, err := b.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tx{t, b.d}, nil
}

func (t *tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.q(query), t.d.args(args)...)
}

func (t *tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.q(query), t.d.args(args)...)
}

func (t *tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.q(query), t.d.args(args)...)
}

func (t *tx) PrepareContext(ctx context.Context, query string) (*stmt, error) {
	st, err := t.Tx.PrepareContext(ctx, t.d.q(query))
	if err != nil {
		return nil, err
	}
	return &stmt{st, t.d}, nil
}

// stmt is a prepared statement that takes arguments in its dialect.
type stmt struct {
	*sql.Stmt
	d dialect
}

func (s *stmt) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	return s.Stmt.ExecContext(ctx, s.d.args(args)...)
}

func (s *stmt) QueryContext(ctx context.Context, args ...any) (*sql.Rows, error) {
	return s.Stmt.QueryContext(ctx, s.d.args(args)...)
}

func (s *stmt) QueryRowContext(ctx context.Context, args ...any) *sql.Row {
	return s.Stmt.QueryRowContext(ctx, s.d.args(args)...)
}

// pgQuery rewrites a query from SQLite's text to PostgreSQL's.
func pgQuery(q string) string {
	var b strings.Builder
	n := 0
	inString := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			inString = !inString
			b.WriteByte(c)
		case c == '?' && !inString:
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			if j > i+1 {
				b.WriteString("$" + q[i+1:j])
				i = j - 1
			} else {
				n++
				b.WriteString("$" + strconv.Itoa(n))
			}
		default:
			b.WriteByte(c)
		}
	}
	return pgFuncs.Replace(b.String())
}

var pgFuncs = strings.NewReplacer("instr(", "strpos(", "json_group_array(", "json_agg(", "json_array(", "json_build_array(")

var (
	createTable = regexp.MustCompile(`(?s)CREATE TABLE (\w+) \((.*?)\n\)( WITHOUT ROWID)?;`)
	intPK       = regexp.MustCompile(`\bINTEGER PRIMARY KEY( AUTOINCREMENT)?`)
	integer     = regexp.MustCompile(`\bINTEGER\b`)
	blob        = regexp.MustCompile(`\bBLOB\b`)
)

// pgSchema rewrites a migration from SQLite's text to PostgreSQL's.
func pgSchema(script string) string {
	script = createTable.ReplaceAllStringFunc(script, func(m string) string {
		p := createTable.FindStringSubmatch(m)
		name, body, withoutRowid := p[1], p[2], p[3] != ""
		if !withoutRowid && !intPK.MatchString(body) {
			body += ",\n    rowid BIGINT GENERATED BY DEFAULT AS IDENTITY"
		}
		return fmt.Sprintf("CREATE TABLE %s (%s\n);", name, body)
	})
	script = intPK.ReplaceAllString(script, "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
	script = integer.ReplaceAllString(script, "BIGINT")
	script = blob.ReplaceAllString(script, "BYTEA")
	return pgFuncs.Replace(script)
}

// batchSQL is a statement that takes many rows as one parameter, after
// any others: in SQLite a JSON array (of arrays when rows have several
// columns, []byte as hex), read with json_each; in PostgreSQL one array per
// column, read with unnest.
type batchSQL struct{ sqlite, postgres string }

// batchArgs are the arguments of a batchSQL: lead, then rows.
func (d dialect) batchArgs(lead []any, rows [][]any) ([]any, error) {
	if d == postgresDB {
		return append(d.args(lead), pgColumns(rows)...), nil
	}
	var list any
	if len(rows) > 0 && len(rows[0]) == 1 {
		flat := make([]any, len(rows))
		for i, r := range rows {
			flat[i] = r[0]
		}
		list = flat
	} else {
		for _, r := range rows {
			for i, v := range r {
				if b, ok := v.([]byte); ok {
					r[i] = hex.EncodeToString(b)
				}
			}
		}
		list = rows
	}
	js, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	return append(lead, string(js)), nil
}

// pgColumns turns rows into one typed slice per column.
func pgColumns(rows [][]any) []any {
	if len(rows) == 0 {
		return nil
	}
	cols := make([]any, len(rows[0]))
	for c, v := range rows[0] {
		switch v.(type) {
		case string:
			col := make([]string, len(rows))
			for i, r := range rows {
				col[i] = pgText(r[c].(string))
			}
			cols[c] = col
		case []byte:
			col := make([][]byte, len(rows))
			for i, r := range rows {
				col[i] = r[c].([]byte)
			}
			cols[c] = col
		default:
			col := make([]int64, len(rows))
			for i, r := range rows {
				col[i] = toInt64(r[c])
			}
			cols[c] = col
		}
	}
	return cols
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case uint64:
		return int64(n)
	case bool:
		return boolInt(n)
	}
	panic(fmt.Sprintf("store: a batch column of %T", v))
}

// execBatch runs a batchSQL.
func (t *tx) execBatch(ctx context.Context, q batchSQL, lead []any, rows [][]any) error {
	args, err := t.d.batchArgs(lead, rows)
	if err != nil {
		return err
	}
	text := q.sqlite
	if t.d == postgresDB {
		text = q.postgres
	}
	_, err = t.Tx.ExecContext(ctx, text, args...)
	return err
}

// queryBatch runs a batchSQL query.
func (b *db) queryBatch(ctx context.Context, q batchSQL, lead []any, rows [][]any) (*sql.Rows, error) {
	args, err := b.d.batchArgs(lead, rows)
	if err != nil {
		return nil, err
	}
	text := q.sqlite
	if b.d == postgresDB {
		text = q.postgres
	}
	return b.DB.QueryContext(ctx, text, args...)
}
