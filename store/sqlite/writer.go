package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/tethermq/tether/store"
)

// writer is the connection a store that opened its own database (Open)
// writes on, with the statements prepared on it: a batch then spends no
// time parsing its statements (about a third of an Apply's CPU when each
// write parsed them anew), and the writes of one handle take turns in the
// order they come instead of racing for SQLite's write lock. A store on a
// caller's database (New) borrows a connection for each write instead:
// that pool may have room for only one.
type writer struct {
	turn  chan struct{} // holds a token while a write runs
	conn  *sql.Conn     // nil until the first write, and after a failure
	stmts map[string]*sql.Stmt
}

func newWriter() *writer {
	return &writer{turn: make(chan struct{}, 1), stmts: make(map[string]*sql.Stmt)}
}

// writeConn returns the connection for a write and the function that
// gives it back, told whether the connection failed. With a writer it
// waits for the writer's turn, no longer than the busy timeout, as a
// write waiting for SQLite's write lock would.
func (s *Store) writeConn(ctx context.Context) (*sql.Conn, func(bad bool), error) {
	w := s.w
	if w == nil {
		conn, err := s.poolConn(ctx)
		if err != nil {
			return nil, nil, err
		}
		return conn, func(bad bool) {
			if bad {
				_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // dropped from the pool
			}
			_ = conn.Close()
		}, nil
	}
	if err := s.takeTurn(ctx); err != nil {
		return nil, nil, err
	}
	if w.conn == nil {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			<-w.turn
			return nil, nil, err
		}
		w.conn = conn
	}
	return w.conn, func(bad bool) {
		if bad {
			_ = w.conn.Raw(func(any) error { return driver.ErrBadConn })
			w.close()
		}
		<-w.turn
	}, nil
}

// takeTurn waits for the writer's turn: at once when it is free (no timer
// on the write path), else within the busy timeout.
func (s *Store) takeTurn(ctx context.Context) error {
	select {
	case s.w.turn <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(s.busyTimeout)
	defer t.Stop()
	select {
	case s.w.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("%w: this handle's other writes took over %v", store.ErrLocked, s.busyTimeout)
	}
}

// connGone reports whether err says a connection can no longer be used,
// so that the writer takes another for the next write.
func connGone(err error) bool {
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)
}

// close closes the writer's statements and gives its connection back to
// the pool; the next write takes another. Only with the writer's turn, or
// once no write can run.
func (w *writer) close() {
	for q, st := range w.stmts {
		_ = st.Close()
		delete(w.stmts, q)
	}
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}

// prepared returns the statement q prepared on conn when conn is the
// writer's, preparing it on first use, and nil otherwise. Only inside
// write, which holds the writer's turn.
func (s *Store) prepared(ctx context.Context, conn *sql.Conn, q string) *sql.Stmt {
	w := s.w
	if w == nil || conn != w.conn {
		return nil
	}
	if st := w.stmts[q]; st != nil {
		return st
	}
	st, err := conn.PrepareContext(ctx, q)
	if err != nil {
		return nil // the plain statement reports it
	}
	w.stmts[q] = st
	return st
}

// exec runs q on conn inside write: through its prepared statement on the
// writer's connection.
func (s *Store) exec(ctx context.Context, conn *sql.Conn, q string, args ...any) (sql.Result, error) {
	if st := s.prepared(ctx, conn, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return conn.ExecContext(ctx, q, args...)
}

// queryRow is exec for a query of one row.
func (s *Store) queryRow(ctx context.Context, conn *sql.Conn, q string, args ...any) *sql.Row {
	if st := s.prepared(ctx, conn, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return conn.QueryRowContext(ctx, q, args...)
}
