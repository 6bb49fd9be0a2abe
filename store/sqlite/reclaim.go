package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync/atomic"
	"time"
)

// DefaultMaxFreePages is the number of free pages a database file keeps
// when Options.MaxFreePages is zero: 4 MiB with SQLite's default page size
// of 4 KiB.
const DefaultMaxFreePages = 1024

// WALSizeLimit is the journal_size_limit of the store's connections: the
// size to which a writer starting the WAL over truncates it, once a
// checkpoint has copied it all back into the database. It is four times
// what SQLite's automatic checkpoint lets the WAL grow to, so that
// ordinary writes never truncate and regrow it.
const WALSizeLimit = 16 << 20

const (
	// reclaimStep is how many pages one transaction gives back: a step
	// that moves live pages into free ones writes about 1 MiB, a quarter
	// of what an automatic checkpoint lets the WAL hold, and holds the
	// write lock for some milliseconds.
	reclaimStep = 256
	// reclaimEvery is the least time between two checks of the free page
	// count: an Apply that deletes only wakes the reclaimer, which reads
	// the count at most this often.
	reclaimEvery = 500 * time.Millisecond
	// reclaimPause is the least pause between two steps. SQLite's busy
	// handler retries a writer kept waiting at least every 100ms, so a
	// writer that a step kept waiting takes the lock in the pause after
	// the step, however fast the steps come.
	reclaimPause = 100 * time.Millisecond
)

// reclaimer gives the free pages of the file back to the file system, on a
// goroutine of its own that Store.Close ends. Apply and Clear wake it after
// a commit that deleted records; it never runs inside their transactions.
type reclaimer struct {
	wake   chan struct{} // capacity 1: records were deleted since the last check
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has ended
	steps  atomic.Int64  // steps committed, for tests
}

// startReclaimer starts the reclaimer, unless Options.MaxFreePages turned
// it off. Its first check, at once, covers the free pages an earlier run
// left behind.
func (s *Store) startReclaimer() {
	if s.maxFree < 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &reclaimer{wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	r.wake <- struct{}{}
	s.reclaim = r
	go s.reclaimLoop(ctx, r)
}

// freed tells the reclaimer that a committed write deleted records. It
// never blocks: a wake-up already pending covers this one.
func (s *Store) freed() {
	if s.reclaim == nil {
		return
	}
	select {
	case s.reclaim.wake <- struct{}{}:
	default:
	}
}

// stopReclaimer ends the reclaimer and waits for it; a step under way is
// interrupted and rolled back. Calling it again does nothing.
func (s *Store) stopReclaimer() {
	if s.reclaim == nil {
		return
	}
	s.reclaim.cancel()
	<-s.reclaim.done
}

func (s *Store) reclaimLoop(ctx context.Context, r *reclaimer) {
	defer close(r.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		s.reclaimFree(ctx, r)
		if !sleep(ctx, reclaimEvery) {
			return
		}
	}
}

// reclaimFree gives every free page back, reclaimStep pages per
// transaction, once more than maxFree pages are free. After each step it
// pauses reclaimPause, or as long as the step took if that is longer, so
// that writers waiting for the lock get it in between. An error ends the
// round; the next deletes start another.
func (s *Store) reclaimFree(ctx context.Context, r *reclaimer) {
	free, err := s.freePages(ctx)
	if err != nil || free <= int64(s.maxFree) {
		return
	}
	for {
		began := time.Now()
		if err := s.reclaimOnce(ctx); err != nil {
			return
		}
		r.steps.Add(1)
		left, err := s.freePages(ctx)
		if err != nil {
			return
		}
		// All back; or no progress, other writers freeing pages as fast
		// as the steps give them back, and the next round goes on.
		if left == 0 || left >= free {
			break
		}
		free = left
		if !sleep(ctx, max(time.Since(began), reclaimPause)) {
			return
		}
	}
	// The file shrinks when a checkpoint copies the last step back, and
	// the backlog's frames leave the WAL when it is truncated.
	if end, err := s.begin(ctx, "reclaim"); err == nil {
		_ = s.truncateWAL(ctx)
		end()
	}
}

// freePages returns how many pages of the file are free and can be given
// back in steps: none unless the file is in incremental auto-vacuum mode.
func (s *Store) freePages(ctx context.Context) (int64, error) {
	end, err := s.begin(ctx, "reclaim")
	if err != nil {
		return 0, err
	}
	defer end()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// freelist_count first, on the same connection: it reads the file's
	// header, while auto_vacuum answers from the header the connection
	// read last, which Compact may have changed since.
	var mode, free int64
	if err := conn.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
		return 0, err
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return 0, err
	}
	if mode != 2 { // 2: incremental
		return 0, nil
	}
	return free, nil
}

// reclaimOnce gives up to reclaimStep free pages back, in a transaction of
// its own.
func (s *Store) reclaimOnce(ctx context.Context) error {
	end, err := s.begin(ctx, "reclaim")
	if err != nil {
		return err
	}
	defer end()
	return s.write(ctx, func(conn *sql.Conn) error {
		_, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", reclaimStep))
		return err
	})
}

// truncateWAL copies the WAL back into the database and truncates it to
// nothing, if no reader or writer is in the way; it waits for none, but
// then copies what it can, as a passive checkpoint does.
func (s *Store) truncateWAL(ctx context.Context) (err error) {
	conn, err := s.poolConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA busy_timeout = 0"); err != nil {
		return err
	}
	defer func() {
		// The connection goes back to the pool with the store's timeout,
		// or not at all.
		restore := fmt.Sprintf("PRAGMA busy_timeout = %d", s.busyTimeout.Milliseconds())
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), restore); rerr != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return checkpoint(ctx, conn, "TRUNCATE")
}

// checkpoint runs a checkpoint of the given mode on conn. One that cannot
// finish (readers or writers in the way past the busy timeout) is no
// error: a later one finishes it.
func checkpoint(ctx context.Context, conn *sql.Conn, mode string) error {
	var busy, logFrames, done int64
	err := conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logFrames, &done)
	if err != nil && !isBusy(err) {
		return err
	}
	return nil
}

// Compact rewrites the database file without its free pages (SQLite's
// VACUUM) and converts it to incremental auto-vacuum, so that from then on
// the store gives free pages back by itself (see the package doc, Space):
// a one-off for a file created by an earlier version of this package, or
// for a tool reclaiming space at once. It holds the write lock of the file
// for as long as the rewrite takes, which for a large file can exceed
// Options.BusyTimeout, so writes of other handles and processes may fail
// with store.ErrLocked meanwhile; and it needs free disk space for a copy
// of the database. It ends with a checkpoint that truncates the WAL, which
// the rewrite filled with the whole database.
func (s *Store) Compact(ctx context.Context) error {
	end, err := s.begin(ctx, "compact")
	if err != nil {
		return err
	}
	defer end()
	if err := s.compact(ctx); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("sqlite: compact: %w", classify(err))
	}
	return nil
}

// compact sets the mode and runs VACUUM on one connection, the mode being
// a setting of the connection that VACUUM writes into the new file, then
// truncates the WAL, waiting for readers and writers up to the busy
// timeout.
func (s *Store) compact(ctx context.Context) error {
	conn, err := s.poolConn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return err
	}
	if err := s.retryBusy(ctx, func() error {
		_, err := conn.ExecContext(ctx, "VACUUM")
		return err
	}); err != nil {
		return err
	}
	return checkpoint(ctx, conn, "TRUNCATE")
}

// sleep waits for d, or returns false as soon as ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
