// Package inventory is what a machine has: its collection on every node
// (system, packages, software installed by swdist, operator-defined fields),
// the digest-and-delta reports that carry only what changed up the tree,
// their validation at the first hop, and the filters and sums that managing
// nodes answer over their subtree.
//
// An inventory is a set of scalar fields ("os.version" → "12") and of items
// by kind ("software", "disk", "net"), each item a small record of fixed
// attributes. Numbers are written in decimal; sizes in bytes.
package inventory

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/klauspost/compress/zstd"
)

// Inventory is everything one machine reports.
type Inventory struct {
	Fields map[string]string          `cbor:"0,keyasint,omitempty"`
	Items  map[string]map[string]Item `cbor:"1,keyasint,omitempty"` // kind → key → item
}

// Item is one record of a kind: attribute → value.
type Item map[string]string

// Kind describes one kind of item: its attributes, and those that make an
// item's key (two items of a machine with the same key are the same item).
type Kind struct {
	Name  string
	Attrs []string
	Key   []string
	// Numeric attributes compare and sum as numbers.
	Numeric []string
}

// Kinds are the item kinds a report may carry.
var Kinds = map[string]Kind{
	"software": {Name: "software", Attrs: []string{"name", "version", "arch", "source", "cid", "installed_at"},
		Key: []string{"source", "name", "arch", "version"}},
	"disk": {Name: "disk", Attrs: []string{"mount", "device", "fstype", "size", "free", "used_percent"},
		Key: []string{"mount"}, Numeric: []string{"size", "free", "used_percent"}},
	"net": {Name: "net", Attrs: []string{"name", "mac", "addrs", "mtu"}, Key: []string{"name"}, Numeric: []string{"mtu"}},
}

// NumericFields are the scalar fields that compare and sum as numbers.
var NumericFields = []string{"cpu.count", "memory.total", "memory.available", "boot_time", "uptime"}

// KeyOf is the key of an item of kind k.
func (k Kind) KeyOf(it Item) string {
	parts := make([]string, len(k.Key))
	for i, a := range k.Key {
		parts[i] = it[a]
	}
	return strings.Join(parts, "|")
}

// IsNumeric reports whether field (scalar "memory.total" or item
// "disk.free") is numeric.
func IsNumeric(field string) bool {
	if slices.Contains(NumericFields, field) {
		return true
	}
	kind, attr, ok := strings.Cut(field, ".")
	if k, isKind := Kinds[kind]; ok && isKind {
		return slices.Contains(k.Numeric, attr)
	}
	return false
}

// Part is the part of the inventory a field belongs to, for display.
func Part(field string) string {
	head, _, _ := strings.Cut(field, ".")
	switch head {
	case "custom", "error":
		return head
	case "software", "disk", "net":
		return head
	}
	return "system"
}

// Add puts an item of kind into inv.
func (inv *Inventory) Add(kind string, it Item) {
	if inv.Items == nil {
		inv.Items = map[string]map[string]Item{}
	}
	if inv.Items[kind] == nil {
		inv.Items[kind] = map[string]Item{}
	}
	inv.Items[kind][Kinds[kind].KeyOf(it)] = it
}

// Set sets a scalar field.
func (inv *Inventory) Set(field, value string) {
	if inv.Fields == nil {
		inv.Fields = map[string]string{}
	}
	inv.Fields[field] = value
}

// Clone is a deep copy.
func (inv Inventory) Clone() Inventory {
	out := Inventory{Fields: maps.Clone(inv.Fields)}
	for kind, items := range inv.Items {
		for _, it := range items {
			out.Add(kind, maps.Clone(it))
		}
	}
	return out
}

// Digest is the SHA-256 of the canonical encoding: two machines with the
// same inventory have the same digest.
func (inv Inventory) Digest() []byte {
	b, err := encMode.Marshal(inv)
	if err != nil {
		panic(fmt.Sprintf("inventory: encode: %v", err)) // maps of strings always encode
	}
	d := sha256.Sum256(b)
	return d[:]
}

// Marshal encodes inv (canonical CBOR).
func (inv Inventory) Marshal() ([]byte, error) { return encMode.Marshal(inv) }

// Unmarshal decodes what Marshal encoded.
func Unmarshal(b []byte) (Inventory, error) {
	var inv Inventory
	if err := decMode.Unmarshal(b, &inv); err != nil {
		return Inventory{}, fmt.Errorf("decode inventory: %w", err)
	}
	return inv, nil
}

// Delta is what one report carries: the whole inventory (Full) or what
// changed since the inventory with digest Base.
type Delta struct {
	Seq    uint64              `cbor:"0,keyasint"`
	Full   bool                `cbor:"1,keyasint,omitempty"`
	Base   []byte              `cbor:"2,keyasint,omitempty"`
	Digest []byte              `cbor:"3,keyasint"`
	Set    map[string]string   `cbor:"4,keyasint,omitempty"`
	Unset  []string            `cbor:"5,keyasint,omitempty"`
	Add    map[string][]Item   `cbor:"6,keyasint,omitempty"` // kind → items added or changed
	Del    map[string][]string `cbor:"7,keyasint,omitempty"` // kind → keys removed
}

// Empty reports whether d changes nothing.
func (d Delta) Empty() bool {
	return !d.Full && len(d.Set) == 0 && len(d.Unset) == 0 && len(d.Add) == 0 && len(d.Del) == 0
}

// Changes counts the fields and items d sets or removes.
func (d Delta) Changes() int {
	n := len(d.Set) + len(d.Unset)
	for _, its := range d.Add {
		n += len(its)
	}
	for _, ks := range d.Del {
		n += len(ks)
	}
	return n
}

// FullDelta carries all of inv.
func FullDelta(inv Inventory, seq uint64) Delta {
	d := Delta{Seq: seq, Full: true, Digest: inv.Digest(), Set: maps.Clone(inv.Fields)}
	for _, kind := range slices.Sorted(maps.Keys(inv.Items)) {
		for _, key := range slices.Sorted(maps.Keys(inv.Items[kind])) {
			if d.Add == nil {
				d.Add = map[string][]Item{}
			}
			d.Add[kind] = append(d.Add[kind], inv.Items[kind][key])
		}
	}
	return d
}

// Diff is the delta from old to cur.
func Diff(old, cur Inventory, seq uint64) Delta {
	d := Delta{Seq: seq, Base: old.Digest(), Digest: cur.Digest()}
	for f, v := range cur.Fields {
		if ov, ok := old.Fields[f]; !ok || ov != v {
			if d.Set == nil {
				d.Set = map[string]string{}
			}
			d.Set[f] = v
		}
	}
	for _, f := range slices.Sorted(maps.Keys(old.Fields)) {
		if _, ok := cur.Fields[f]; !ok {
			d.Unset = append(d.Unset, f)
		}
	}
	kinds := slices.Sorted(maps.Keys(Kinds))
	for _, kind := range kinds {
		oi, ci := old.Items[kind], cur.Items[kind]
		for _, key := range slices.Sorted(maps.Keys(ci)) {
			if o, ok := oi[key]; !ok || !maps.Equal(o, ci[key]) {
				if d.Add == nil {
					d.Add = map[string][]Item{}
				}
				d.Add[kind] = append(d.Add[kind], ci[key])
			}
		}
		for _, key := range slices.Sorted(maps.Keys(oi)) {
			if _, ok := ci[key]; !ok {
				if d.Del == nil {
					d.Del = map[string][]string{}
				}
				d.Del[kind] = append(d.Del[kind], key)
			}
		}
	}
	return d
}

// Apply applies d to inv (a full delta replaces it).
func (inv *Inventory) Apply(d Delta) {
	if d.Full {
		*inv = Inventory{}
	}
	for f, v := range d.Set {
		inv.Set(f, v)
	}
	for _, f := range d.Unset {
		delete(inv.Fields, f)
	}
	for kind, keys := range d.Del {
		for _, k := range keys {
			delete(inv.Items[kind], k)
		}
	}
	for kind, its := range d.Add {
		for _, it := range its {
			inv.Add(kind, it)
		}
	}
}

// Limits on one report, checked by the first node that receives it.
const (
	MaxBody       = 1 << 20 // compressed
	MaxDecoded    = 8 << 20
	MaxFields     = 2000
	MaxItems      = 50000 // of all kinds together
	MaxNameLen    = 128
	MaxValueLen   = 4096
	MaxCustomKeys = 200
)

// Reasons a report is refused, counted by the node that refused it.
var (
	ErrOversized = errors.New("oversized")
	ErrMalformed = errors.New("malformed")
	ErrTooMany   = errors.New("too many fields or items")
	ErrBadName   = errors.New("bad field name")
	ErrBadValue  = errors.New("bad value")
)

// Reason is the counted reason of a refusal.
func Reason(err error) string {
	for _, r := range []error{ErrOversized, ErrMalformed, ErrTooMany, ErrBadName, ErrBadValue} {
		if errors.Is(err, r) {
			return r.Error()
		}
	}
	return "other"
}

var (
	encMode = func() cbor.EncMode {
		m, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	decMode = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DupMapKey:        cbor.DupMapKeyEnforcedAPF,
			MaxArrayElements: MaxItems, MaxMapPairs: MaxItems, MaxNestedLevels: 8,
			ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	fieldName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.\-]*$`)
)

// Codec compresses and decompresses report bodies. It is safe for
// concurrent use.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// NewCodec makes a Codec.
func NewCodec() (*Codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxDecoded), zstd.WithDecoderMaxWindow(MaxDecoded))
	if err != nil {
		return nil, err
	}
	return &Codec{enc: enc, dec: dec}, nil
}

// Encode is the body of a report carrying d.
func (c *Codec) Encode(d Delta) ([]byte, error) {
	b, err := encMode.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	out := c.enc.EncodeAll(b, nil)
	if len(out) > MaxBody {
		return nil, fmt.Errorf("inventory report of %d bytes compressed, at most %d: %w", len(out), MaxBody, ErrOversized)
	}
	return out, nil
}

// Decode reads and validates a report body.
func (c *Codec) Decode(body []byte) (Delta, error) {
	if len(body) > MaxBody {
		return Delta{}, fmt.Errorf("%d bytes, at most %d: %w", len(body), MaxBody, ErrOversized)
	}
	raw, err := c.dec.DecodeAll(body, make([]byte, 0, min(4*len(body), MaxDecoded)))
	if err != nil {
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return Delta{}, fmt.Errorf("decompresses to more than %d bytes: %w", MaxDecoded, ErrOversized)
		}
		return Delta{}, fmt.Errorf("decompress: %v: %w", err, ErrMalformed)
	}
	if len(raw) > MaxDecoded {
		return Delta{}, fmt.Errorf("decompresses to %d bytes, at most %d: %w", len(raw), MaxDecoded, ErrOversized)
	}
	var d Delta
	if err := decMode.Unmarshal(raw, &d); err != nil {
		return Delta{}, fmt.Errorf("decode: %v: %w", err, ErrMalformed)
	}
	return d, d.Validate()
}

// Validate checks that d is a plausible report from a machine.
func (d Delta) Validate() error {
	if len(d.Digest) != sha256.Size || (len(d.Base) != 0 && len(d.Base) != sha256.Size) || (!d.Full && len(d.Base) == 0) {
		return fmt.Errorf("digests: %w", ErrMalformed)
	}
	if len(d.Set)+len(d.Unset) > MaxFields {
		return fmt.Errorf("%d fields, at most %d: %w", len(d.Set)+len(d.Unset), MaxFields, ErrTooMany)
	}
	custom := 0
	for f, v := range d.Set {
		if err := checkName(f); err != nil {
			return err
		}
		if strings.HasPrefix(f, "custom.") {
			custom++
		}
		if err := checkValue(f, v); err != nil {
			return err
		}
	}
	if custom > MaxCustomKeys {
		return fmt.Errorf("%d custom fields, at most %d: %w", custom, MaxCustomKeys, ErrTooMany)
	}
	for _, f := range d.Unset {
		if err := checkName(f); err != nil {
			return err
		}
	}
	items := 0
	for kind, its := range d.Add {
		k, ok := Kinds[kind]
		if !ok {
			return fmt.Errorf("unknown item kind %q: %w", kind, ErrBadName)
		}
		items += len(its)
		for _, it := range its {
			for a, v := range it {
				if !slices.Contains(k.Attrs, a) {
					return fmt.Errorf("%s item: unknown attribute %q: %w", kind, a, ErrBadName)
				}
				if err := checkValue(kind+"."+a, v); err != nil {
					return err
				}
			}
			if strings.Trim(k.KeyOf(it), "|") == "" {
				return fmt.Errorf("%s item with an empty key: %w", kind, ErrBadValue)
			}
		}
	}
	for kind, keys := range d.Del {
		if _, ok := Kinds[kind]; !ok {
			return fmt.Errorf("unknown item kind %q: %w", kind, ErrBadName)
		}
		items += len(keys)
	}
	if items > MaxItems {
		return fmt.Errorf("%d items, at most %d: %w", items, MaxItems, ErrTooMany)
	}
	return nil
}

func checkName(f string) error {
	if len(f) > MaxNameLen || !fieldName.MatchString(f) {
		return fmt.Errorf("field %.40q: use lower-case letters, digits, '.', '_' and '-', at most %d: %w", f, MaxNameLen, ErrBadName)
	}
	if _, isKind := Kinds[strings.SplitN(f, ".", 2)[0]]; isKind {
		return fmt.Errorf("field %q: %q is an item kind: %w", f, strings.SplitN(f, ".", 2)[0], ErrBadName)
	}
	return nil
}

func checkValue(f, v string) error {
	if len(v) > MaxValueLen || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return fmt.Errorf("%s: value of %d bytes: at most %d bytes of UTF-8 text: %w", f, len(v), MaxValueLen, ErrBadValue)
	}
	return nil
}

// SameDigest compares two digests.
func SameDigest(a, b []byte) bool { return len(a) > 0 && bytes.Equal(a, b) }
