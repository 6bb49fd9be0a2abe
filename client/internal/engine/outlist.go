package engine

import (
	"cmp"
	"slices"
)

// outList holds the session's outbound messages in Seq order. A new
// message has the highest Seq, so adding is an append; a finished one is
// only marked, and the marked are swept out once they are half of the
// list. So the hot path costs no map operation, and a resend walks the
// messages in order without sorting them.
type outList struct {
	ms   []*Out
	live int
}

// add adds m, which is not in the list.
func (l *outList) add(m *Out) {
	m.tracked = true
	l.live++
	if n := len(l.ms); n == 0 || l.ms[n-1].seq < m.seq {
		l.ms = append(l.ms, m)
		return
	}
	// Only a failover that could not load the new session puts messages
	// back below others.
	i, _ := slices.BinarySearchFunc(l.ms, m.seq, bySeq)
	l.ms = slices.Insert(l.ms, i, m)
}

// find returns the tracked message with sequence number seq, or nil.
func (l *outList) find(seq uint64) *Out {
	i, ok := slices.BinarySearchFunc(l.ms, seq, bySeq)
	if !ok || !l.ms[i].tracked {
		return nil
	}
	return l.ms[i]
}

func bySeq(o *Out, seq uint64) int { return cmp.Compare(o.seq, seq) }

// remove takes m, which is in the list, out of it.
func (l *outList) remove(m *Out) {
	m.tracked = false
	l.live--
	if dead := len(l.ms) - l.live; dead > 64 && dead*2 > len(l.ms) {
		l.ms = slices.DeleteFunc(l.ms, func(o *Out) bool { return !o.tracked })
	}
}

// all returns the messages in Seq order, as a slice of their own.
func (l *outList) all() []*Out {
	ms := make([]*Out, 0, l.live)
	for _, m := range l.ms {
		if m.tracked {
			ms = append(ms, m)
		}
	}
	return ms
}

// addRun adds the messages of run, in Seq order and none of them in the
// list: a page of the tail, which goes before the messages published
// while it was in the store.
func (l *outList) addRun(run []*Out) {
	if len(run) == 0 {
		return
	}
	for _, m := range run {
		m.tracked = true
	}
	l.live += len(run)
	i, _ := slices.BinarySearchFunc(l.ms, run[0].seq, bySeq)
	if i == len(l.ms) {
		l.ms = append(l.ms, run...)
		return
	}
	rest := slices.Clone(l.ms[i:])
	l.ms = l.ms[:i]
	for len(run) > 0 && len(rest) > 0 {
		if run[0].seq < rest[0].seq {
			l.ms, run = append(l.ms, run[0]), run[1:]
		} else {
			l.ms, rest = append(l.ms, rest[0]), rest[1:]
		}
	}
	l.ms = append(append(l.ms, run...), rest...)
}

// from returns the list from the first message with a Seq at or above
// seq, finished ones included.
func (l *outList) from(seq uint64) []*Out {
	i, _ := slices.BinarySearchFunc(l.ms, seq, bySeq)
	return l.ms[i:]
}
