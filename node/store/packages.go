package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Package is a package this node knows.
type Package struct {
	CID     string
	Name    string
	Version string
	Size    uint64
	Stored  uint64
	Chunks  int
	AddedAt time.Time
}

// ErrNoPackage: no package by that name, version or CID.
var ErrNoPackage = errors.New("no such package")

// AddPackage records a package; a name and version already taken by
// another CID is an error.
func (s *Store) AddPackage(ctx context.Context, p Package) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO packages(cid, name, version, size, stored, chunks, added_at) VALUES(?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(cid) DO NOTHING`, p.CID, p.Name, p.Version, p.Size, p.Stored, p.Chunks, p.AddedAt.Unix())
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "unique") {
		return fmt.Errorf("%s@%s is already another package: give this one another version", p.Name, p.Version)
	}
	return err
}

// Packages lists the packages, by name and version.
func (s *Store) Packages(ctx context.Context) ([]Package, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT cid, name, version, size, stored, chunks, added_at FROM packages ORDER BY name, version`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Package
	for rows.Next() {
		var p Package
		var at int64
		if err := rows.Scan(&p.CID, &p.Name, &p.Version, &p.Size, &p.Stored, &p.Chunks, &at); err != nil {
			return nil, err
		}
		p.AddedAt = time.Unix(at, 0).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

// FindPackage resolves NAME@VERSION or a root CID.
func (s *Store) FindPackage(ctx context.Context, ref string) (Package, error) {
	var p Package
	var at int64
	q := `SELECT cid, name, version, size, stored, chunks, added_at FROM packages WHERE cid = ?`
	args := []any{ref}
	if name, version, ok := strings.Cut(ref, "@"); ok {
		q, args = `SELECT cid, name, version, size, stored, chunks, added_at FROM packages WHERE name = ? AND version = ?`, []any{name, version}
	}
	err := s.db.QueryRowContext(ctx, q, args...).Scan(&p.CID, &p.Name, &p.Version, &p.Size, &p.Stored, &p.Chunks, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("%q: %w ('swdist package ls' lists them)", ref, ErrNoPackage)
	}
	p.AddedAt = time.Unix(at, 0).UTC()
	return p, err
}

// Installed is software an install job put on this machine.
type Installed struct {
	Name, Version, CID, Path, Job string
	At                            time.Time
}

// RecordInstalled records software installed, replacing the record of the
// same name and version.
func (s *Store) RecordInstalled(ctx context.Context, i Installed) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO installed(name, version, cid, path, job_id, installed_at) VALUES(?, ?, ?, ?, ?, ?)
		ON CONFLICT(name, version) DO UPDATE SET cid = excluded.cid, path = excluded.path, job_id = excluded.job_id,
			installed_at = excluded.installed_at`, i.Name, i.Version, i.CID, i.Path, i.Job, i.At.Unix())
	return err
}

// ForgetInstalled removes the record of software removed.
func (s *Store) ForgetInstalled(ctx context.Context, name, version string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM installed WHERE name = ? AND version = ?`, name, version)
	return err
}

// InstalledSoftware lists what install jobs put here.
func (s *Store) InstalledSoftware(ctx context.Context) ([]Installed, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, version, cid, path, job_id, installed_at FROM installed ORDER BY name, version`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Installed
	for rows.Next() {
		var i Installed
		var at int64
		if err := rows.Scan(&i.Name, &i.Version, &i.CID, &i.Path, &i.Job, &at); err != nil {
			return nil, err
		}
		i.At = time.Unix(at, 0).UTC()
		out = append(out, i)
	}
	return out, rows.Err()
}

// ForgetPackage removes a package's record.
func (s *Store) ForgetPackage(ctx context.Context, cid string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM packages WHERE cid = ?`, cid)
	return err
}
