package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/tethermq/tether/store"
)

// Scan returns up to limit records of session k with Seq >= from, in Seq
// order, and where the next page starts (store.Scanner). A page is one
// script, so it is consistent in itself; it holds at most limit records
// (store.DefaultScanLimit when limit is zero or less), never more than
// Load's page of 500 records (so the default limit gives pages of 500),
// and stops early past about 1 MiB, so that no page holds Redis up for more
// than a few milliseconds. Records failing their check are reported as
// Load reports them.
func (s *Store) Scan(ctx context.Context, k store.Key, from uint64, limit int) ([]store.Record, uint64, error) {
	if s.isClosed() {
		return nil, 0, fmt.Errorf("redis: scan %s: %w", k, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if limit <= 0 {
		limit = store.DefaultScanLimit
	}
	start := "-" // from 0: every member, those that are no seq field included, as Load
	if from > 0 {
		start = "[" + seqField(from)
	}
	keys, count := s.keys(k), min(limit, s.pageRecords)
	p, err := s.readPage(ctx, "scan", k, keys, start, count, s.pageBytes)
	if err != nil {
		return nil, 0, err
	}
	if from == 0 && p.peek == seqField(0) {
		// The page held only members that sort below every seq field, and
		// Seq 0 follows; a next of 0 would end the scan instead, so the
		// page goes on from Seq 0 (one more round trip, for damage alone).
		q, err := s.readPage(ctx, "scan", k, keys, "["+seqField(0), count, s.pageBytes)
		if err != nil {
			return nil, 0, err
		}
		q.why = append(p.why, q.why...)
		p = q
	}
	var next uint64
	if p.peek != "" {
		q, ok := parseSeqField(p.peek)
		if !ok {
			// A member that is no seq field cannot start a page: the next
			// page starts at the first seq field above it. It is reported
			// here, since no later page will meet it.
			p.why = append(p.why, fmt.Errorf("index member %q is not a sequence number", p.peek))
			q, ok = fieldAbove(p.peek)
		}
		if ok {
			next = q
		}
	}
	if len(p.why) > 0 {
		return p.recs, next, &store.CorruptError{Key: k, Seqs: p.bad, Err: errors.Join(p.why...)}
	}
	return p.recs, next, nil
}

// fieldAbove returns the Seq whose seq field is the least one sorting
// after m (in the byte order of ZRANGEBYLEX), and false when none does.
func fieldAbove(m string) (uint64, bool) {
	const width = 16
	const digits = "0123456789abcdef"
	isDigit := func(c byte) bool { return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') }
	// The longest prefix of m made of field digits, up to a field's width.
	i := 0
	for i < len(m) && i < width && isDigit(m[i]) {
		i++
	}
	var prefix string
	switch {
	case i == width:
		// m is a field with more after it: the field after that one.
		q, _ := strconv.ParseUint(m[:width], 16, 64)
		if q == ^uint64(0) {
			return 0, false
		}
		return q + 1, true
	case i == len(m):
		// A proper prefix of fields: the least field that extends it.
		prefix = m
	default:
		// m[i] is no digit: the prefix, then the least digit above m[i].
		c := m[i]
		switch {
		case c < '0':
			prefix = m[:i] + "0"
		case c < 'a':
			prefix = m[:i] + "a" // c is between '9' and 'a'
		default:
			// No digit sorts above c: the prefix goes up by one, carrying.
			b := []byte(m[:i])
			for len(b) > 0 && b[len(b)-1] == 'f' {
				b = b[:len(b)-1]
			}
			if len(b) == 0 {
				return 0, false
			}
			b[len(b)-1] = digits[indexDigit(b[len(b)-1])+1]
			prefix = string(b)
		}
	}
	for len(prefix) < width {
		prefix += "0"
	}
	q, err := strconv.ParseUint(prefix, 16, 64)
	return q, err == nil
}

// indexDigit returns the value of the hex digit c (lower case).
func indexDigit(c byte) int {
	if c <= '9' {
		return int(c - '0')
	}
	return int(c-'a') + 10
}
