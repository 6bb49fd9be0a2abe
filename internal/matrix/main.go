// Command matrix prints the results of tether's end-to-end session suite
// (conformance/sessiontest) as a table: one row per case, one column per
// backend (and broker), from the JSON stream of go test:
//
//	go test -json -short -race -run 'TestSession' ./store/... | go run ./internal/matrix
//
// A column is named after the package that ran the suite, with the rest of
// the test's name after "TestSession" when there is one (TestSessionCluster
// in store/redis gives "redis/cluster", TestSessionMochi in store/memory
// gives "memory/mochi"). A cell is pass, FAIL, skip, or KNOWN: a case
// skipped because it hit a documented bug of the broker. The last rows
// give each column's wall time. The exit status is 1 when a case failed,
// or when no session test was found.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// event is one line of go test -json (see go doc test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// result is what became of one test.
type result struct {
	action  string // pass, fail, skip, or "" while running
	output  strings.Builder
	elapsed float64
}

const prefix = "TestSession"

func main() {
	code, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "matrix:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(in io.Reader, out io.Writer) (int, error) {
	results := map[string]*result{} // by package + "\x00" + test
	var order []string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue // go test's own lines (build failures) are not JSON
		}
		if !strings.HasPrefix(ev.Test, prefix) {
			continue
		}
		k := ev.Package + "\x00" + ev.Test
		r := results[k]
		if r == nil {
			r = &result{}
			results[k] = r
			order = append(order, k)
		}
		switch ev.Action {
		case "output":
			r.output.WriteString(ev.Output)
		case "pass", "fail", "skip":
			r.action, r.elapsed = ev.Action, ev.Elapsed
		}
	}
	if err := sc.Err(); err != nil {
		return 2, err
	}

	// A session suite's top-level test has an Outbound subtree; other
	// tests whose names merely start with the prefix are left out.
	suites := map[string]bool{}
	for _, k := range order {
		pkg, test, _ := strings.Cut(k, "\x00")
		if top, rest, _ := strings.Cut(test, "/"); strings.HasPrefix(rest, "Outbound/") {
			suites[pkg+"\x00"+top] = true
		}
	}
	var columns, rows []string
	cells := map[string]map[string]string{} // row → column → cell
	wall := map[string]float64{}
	failed := false
	for _, k := range order {
		pkg, test, _ := strings.Cut(k, "\x00")
		top, rest, sub := strings.Cut(test, "/")
		if !suites[pkg+"\x00"+top] {
			continue
		}
		col := path.Base(pkg)
		if s := strings.TrimPrefix(top, prefix); s != "" {
			col += "/" + strings.ToLower(s)
		}
		if !slices.Contains(columns, col) {
			columns = append(columns, col)
		}
		r := results[k]
		if !sub {
			wall[col] += r.elapsed
			if r.action == "fail" {
				failed = true
			}
			continue
		}
		if isParent(results, k) {
			continue
		}
		if !slices.Contains(rows, rest) {
			rows = append(rows, rest)
		}
		if cells[rest] == nil {
			cells[rest] = map[string]string{}
		}
		cells[rest][col] = cell(r)
		if r.action == "fail" {
			failed = true
		}
	}
	if len(columns) == 0 {
		return 1, fmt.Errorf("no %s tests in the input", prefix)
	}

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "case\t%s\n", strings.Join(columns, "\t"))
	for _, row := range rows {
		line := []string{row}
		for _, col := range columns {
			c := cells[row][col]
			if c == "" {
				c = "-"
			}
			line = append(line, c)
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	line := []string{"(wall time)"}
	for _, col := range columns {
		line = append(line, (time.Duration(wall[col] * float64(time.Second))).Round(100*time.Millisecond).String())
	}
	fmt.Fprintln(tw, strings.Join(line, "\t"))
	if err := tw.Flush(); err != nil {
		return 2, err
	}
	fmt.Fprintln(out, "\npass: passed; FAIL: failed; skip: does not apply to the backend or broker; KNOWN: hit a documented broker bug; -: not run")
	if failed {
		return 1, nil
	}
	return 0, nil
}

// isParent reports whether another test of the same package is a subtest
// of the test keyed k.
func isParent(results map[string]*result, k string) bool {
	for other := range results {
		if strings.HasPrefix(other, k+"/") {
			return true
		}
	}
	return false
}

// cell is how a result shows in the table.
func cell(r *result) string {
	switch r.action {
	case "pass":
		return "pass"
	case "fail":
		return "FAIL"
	case "skip":
		if strings.Contains(r.output.String(), "KNOWN BROKER FAULT") {
			return "KNOWN"
		}
		return "skip"
	}
	return "?"
}
