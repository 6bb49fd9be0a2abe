package sqlite

import "sync"

// Partition cuts s off from its file, as a hung process would be, until
// heal is called: every operation of s (lease renewals included) waits.
func Partition(s *Store) (heal func()) {
	s.mu.Lock()
	var once sync.Once
	return func() { once.Do(s.mu.Unlock) }
}

// ReclaimSteps returns how many steps of giving free pages back s has
// committed; 0 when MaxFreePages turned them off.
func ReclaimSteps(s *Store) int64 {
	if s.reclaim == nil {
		return 0
	}
	return s.reclaim.steps.Load()
}

// BreakWriter ends the connection under s's writer, as database/sql ends
// one it found broken, and reports whether s had one.
func BreakWriter(s *Store) bool {
	if s.w == nil || s.w.conn == nil {
		return false
	}
	_ = s.w.conn.Close()
	return true
}
