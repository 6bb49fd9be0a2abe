package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/tethermq/tether/client"
	"github.com/tethermq/tether/store"
)

const sessionsSynopsis = "tether sessions {list | show | clear | discard-corrupt} --store SPEC [--id ID] [--server URL]"

// errNoSession reports a session the store does not hold.
var errNoSession = errors.New("no such session")

func runSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var spec, server, id string
	s := &optionSet{name: "tether sessions"}
	s.str("", "store", "SPEC", "the store: bolt:PATH, sqlite:PATH or redis://HOST:PORT", &spec)
	s.str("", "server", "URL", "the session's server, as listed (needed only when the ClientID has sessions on several)", &server)
	s.str("i", "id", "ID", "the session's ClientID (show, clear)", &id)
	pos, ok, err := s.parseCommand(args, stdout, sessionsSynopsis)
	if !ok {
		return err
	}
	verb := "list"
	if len(pos) > 0 {
		verb = pos[0]
	}
	if len(pos) > 1 {
		return usageErrorf("tether sessions: unexpected %q", pos[1])
	}
	if spec == "" {
		return usageErrorf("tether sessions: --store SPEC is required")
	}
	switch verb {
	case "list", "show", "clear", "discard-corrupt":
	default:
		return usageErrorf("tether sessions: unknown verb %q: want list, show, clear or discard-corrupt", verb)
	}
	if verb != "list" && id == "" {
		return usageErrorf("tether sessions %s: --id is required", verb)
	}
	red := &redactor{}
	st, err := openExistingStore(spec)
	if err != nil {
		return fmt.Errorf("store %s: %s", red.redact(spec), red.redact(err.Error()))
	}
	defer st.Close()
	if verb == "list" {
		return listSessions(ctx, st, stdout, stderr)
	}
	k, err := findSession(ctx, st, server, id)
	if err != nil {
		return err
	}
	if verb == "discard-corrupt" {
		return discardCorrupt(ctx, st, k, stdout)
	}
	if verb == "clear" {
		if err := st.Clear(ctx, k); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cleared %s %s\n", k.Server, escapeTerminal([]byte(k.ClientID), false))
		return nil
	}
	return showSession(ctx, st, k, stdout, stderr)
}

// openExistingStore opens a store for reading: a file store must exist
// already, so that a mistyped path is an error rather than a new file.
func openExistingStore(spec string) (store.SessionStore, error) {
	if kind, path, ok := strings.Cut(spec, ":"); ok && (kind == "bolt" || kind == "sqlite") {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w (a read never creates a store)", err)
		}
	}
	if spec == "memory" {
		return nil, errors.New("a memory store ends with its process: there is nothing to inspect")
	}
	return openStore(spec)
}

// findSession returns the key of the session id on server; with server
// empty, the only session of id.
func findSession(ctx context.Context, st store.SessionStore, server, id string) (store.Key, error) {
	lister, ok := st.(store.Lister)
	if !ok {
		if server == "" {
			return store.Key{}, usageErrorf("this store cannot list its sessions: give --server")
		}
		k := store.Key{Server: server, ClientID: id}
		recs, err := st.Load(ctx, k)
		if err == nil && len(recs) == 0 {
			return k, fmt.Errorf("%w: %s on %s", errNoSession, id, server)
		}
		return k, nil
	}
	keys, err := lister.Sessions(ctx)
	if err != nil {
		return store.Key{}, err
	}
	var match []store.Key
	for _, k := range keys {
		if k.ClientID == id && (server == "" || k.Server == server) {
			match = append(match, k)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		where := ""
		if server != "" {
			where = " on " + server
		}
		return store.Key{}, &exitError{code: exitFailed, err: fmt.Errorf("%w: ClientID %q%s (tether sessions list shows the sessions)", errNoSession, id, where)}
	}
	var servers []string
	for _, k := range match {
		servers = append(servers, k.Server)
	}
	return store.Key{}, usageErrorf("ClientID %q has sessions on %s: give --server", id, strings.Join(servers, ", "))
}

func listSessions(ctx context.Context, st store.SessionStore, stdout, stderr io.Writer) error {
	lister, ok := st.(store.Lister)
	if !ok {
		return errors.New("this store cannot list its sessions")
	}
	keys, err := lister.Sessions(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tCLIENTID\tOUTBOUND\tINBOUND")
	var bad error
	for _, k := range keys {
		recs, err := st.Load(ctx, k)
		if err != nil && !errors.Is(err, store.ErrCorrupt) {
			return err
		}
		var out, in int
		for _, r := range recs {
			switch r.Dir {
			case store.Outbound:
				out++
			case store.Inbound:
				in++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", escapeTerminal([]byte(k.Server), false), escapeTerminal([]byte(k.ClientID), false), out, in)
		if err != nil {
			bad = err
			fmt.Fprintln(stderr, "tether:", escapeTerminal([]byte(err.Error()), false))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad != nil {
		return fmt.Errorf("some records are corrupt: %w", bad)
	}
	return nil
}

func showSession(ctx context.Context, st store.SessionStore, k store.Key, stdout, stderr io.Writer) error {
	recs, loadErr := st.Load(ctx, k)
	var corrupt *store.CorruptError
	if loadErr != nil && !errors.As(loadErr, &corrupt) {
		return loadErr
	}
	fmt.Fprintf(stdout, "session %s %s: %d records\n", k.Server, escapeTerminal([]byte(k.ClientID), false), len(recs))
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tDIR\tID\tSTATE\tQOS\tTOPIC\tREF\tSIZE")
	bad := 0
	infos := client.DescribeRecords(recs)
	for i, r := range recs {
		info := infos[i]
		id, qos, topic, ref, state := "-", "-", "-", "-", info.State
		if r.ID != 0 {
			id = fmt.Sprint(r.ID)
		}
		if info.QoS != 0 {
			qos = fmt.Sprint(info.QoS)
		}
		if info.Topic != "" {
			topic = escapeTerminal([]byte(info.Topic), false)
		}
		if info.Ref != "" {
			ref = escapeTerminal([]byte(info.Ref), false)
		}
		if info.Err != nil {
			bad++
			state = "CORRUPT: " + escapeTerminal([]byte(info.Err.Error()), false)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.Seq, dirName(r.Dir), id, state, qos, topic, ref, len(r.Packet))
	}
	if corrupt != nil {
		for _, seq := range corrupt.Seqs {
			bad++
			fmt.Fprintf(tw, "%d\t-\t-\tCORRUPT: failed the store's integrity check\t-\t-\t-\t-\n", seq)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "%d corrupt record(s): the client leaves them out and keeps their packet identifiers reserved; "+
			"`tether sessions discard-corrupt` deletes them\n", bad)
	}
	if loadErr != nil {
		return loadErr
	}
	return nil
}

// discardCorrupt deletes the records of session k that the client would
// leave out as corrupt, as Client.DiscardCorrupt does.
func discardCorrupt(ctx context.Context, st store.SessionStore, k store.Key, stdout io.Writer) error {
	recs, err := st.Load(ctx, k)
	var corrupt *store.CorruptError
	if err != nil && !errors.As(err, &corrupt) {
		return err
	}
	var ops []store.Op
	if corrupt != nil {
		for _, seq := range corrupt.Seqs {
			ops = append(ops, store.Delete(seq))
		}
	}
	for _, r := range recs {
		if client.DescribeRecord(r).Err != nil {
			ops = append(ops, store.Delete(r.Seq))
		}
	}
	if len(ops) > 0 {
		if err := st.Apply(ctx, k, ops...); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "discarded %d corrupt record(s) of %s %s\n", len(ops), k.Server, escapeTerminal([]byte(k.ClientID), false))
	return nil
}

func dirName(d store.Direction) string {
	switch d {
	case store.Outbound:
		return "out"
	case store.Inbound:
		return "in"
	case store.Meta:
		return "meta"
	}
	return fmt.Sprint(d)
}
