package sqlite

import "sync"

// Partition cuts s off from its file, as a hung process would be, until
// heal is called: every operation of s (lease renewals included) waits.
func Partition(s *Store) (heal func()) {
	s.mu.Lock()
	var once sync.Once
	return func() { once.Do(s.mu.Unlock) }
}
