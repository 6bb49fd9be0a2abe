package engine

// idSet tracks the packet identifiers in use by the session: stored
// outbound records, and SUBSCRIBE/UNSUBSCRIBE requests in flight.
type idSet struct {
	bits [1024]uint64
	n    int
	next uint16
	max  uint16
}

func (s *idSet) has(id uint16) bool { return s.bits[id>>6]&(1<<(id&63)) != 0 }

func (s *idSet) set(id uint16) {
	if !s.has(id) {
		s.bits[id>>6] |= 1 << (id & 63)
		s.n++
	}
}

func (s *idSet) clear(id uint16) {
	if s.has(id) {
		s.bits[id>>6] &^= 1 << (id & 63)
		s.n--
	}
}

// alloc returns a free identifier, going round the space so that a freed
// identifier is reused as late as possible.
func (s *idSet) alloc() (uint16, bool) {
	if s.n >= int(s.max) {
		return 0, false
	}
	for {
		s.next++
		if s.next == 0 || s.next > s.max {
			s.next = 1
		}
		if !s.has(s.next) {
			s.set(s.next)
			return s.next, true
		}
	}
}

func (s *idSet) reset() { *s = idSet{next: s.next, max: s.max} }

// AllocID reserves a packet identifier for a SUBSCRIBE or UNSUBSCRIBE, or
// reports false when every identifier is in use (wait for IDFreed).
// A paged load still reading the stored identifiers gives none yet.
func (e *Engine) AllocID() (uint16, bool) {
	if !e.scan.idsKnown {
		return 0, false
	}
	return e.ids.alloc()
}

// ReleaseID frees an identifier AllocID returned.
func (e *Engine) ReleaseID(id uint16) { e.freeID(id) }

// IDInUse reports whether id is held by the session (for tests).
func (e *Engine) IDInUse(id uint16) bool { return e.ids.has(id) }

// IDsInUse returns how many identifiers the session holds (for tests).
func (e *Engine) IDsInUse() int { return e.ids.n }

// freeID makes id reusable, wakes requests waiting for an identifier and
// lets queued messages take it.
func (e *Engine) freeID(id uint16) {
	e.ids.clear(id)
	e.effect(Effect{Kind: IDFreed})
	e.pump()
}
