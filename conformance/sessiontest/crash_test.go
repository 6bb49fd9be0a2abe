package sessiontest

import "testing"

// TestInboundSettled: the last generation of the crash case is done with
// inbound QoS 2 only when its last store write left no inbound record and
// came after a record was put for every message it handled.
func TestInboundSettled(t *testing.T) {
	for _, c := range []struct {
		name  string
		lines []string
		want  bool
	}{
		{"no write yet", []string{"ready", "got i1"}, false},
		{"records left", []string{"got i1", "inbound 1 1"}, false},
		{"settled", []string{"got i1", "inbound 1 1", "got i2", "inbound 2 2", "inbound 0 2"}, true},
		// Empty only because the last message's record is not put yet.
		{"handled, not recorded", []string{"got i1", "inbound 1 1", "inbound 0 1", "got i2", "done g1-0", "inbound 0 1"}, false},
		{"left by a killed generation, then cleared", []string{"inbound 3 0", "inbound 0 0"}, true},
	} {
		if got := inboundSettled(c.lines); got != c.want {
			t.Errorf("%s: inboundSettled(%q) = %v, want %v", c.name, c.lines, got, c.want)
		}
	}
}
