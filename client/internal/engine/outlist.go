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
