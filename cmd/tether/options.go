package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// errUsage marks a command line that cannot be run; the command exits with
// exitUsage.
var errUsage = errors.New("usage")

// usageErrorf returns a usage error with its message.
func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// option is one command-line option in the style of mosquitto_pub and
// mosquitto_sub: a short letter, long names, and whether it takes a value.
type option struct {
	short string   // "t" for -t; "" for none
	long  []string // "topic" for --topic
	arg   string   // the value's name in the help; "" for a switch
	help  string
	set   func(v string) error // v is "" for a switch
}

// optionSet parses command lines whose options may come before, between
// and after the positional arguments, as getopt does; "--" ends them.
type optionSet struct {
	name string
	opts []*option
}

// add registers an option. A name registered twice is a programming
// error (the second would never be reached), so add panics: a command's
// own option must not shadow one it shares with the others.
func (s *optionSet) add(short, long, arg, help string, set func(string) error) {
	var longs []string
	if long != "" {
		longs = strings.Split(long, ",")
	}
	if short != "" && s.lookup(short, false) != nil {
		panic(fmt.Sprintf("%s: option -%s registered twice", s.name, short))
	}
	for _, l := range longs {
		if s.lookup(l, true) != nil {
			panic(fmt.Sprintf("%s: option --%s registered twice", s.name, l))
		}
	}
	s.opts = append(s.opts, &option{short: short, long: longs, arg: arg, help: help, set: set})
}

func (s *optionSet) flag(short, long, help string, p *bool) {
	s.add(short, long, "", help, func(string) error { *p = true; return nil })
}

func (s *optionSet) str(short, long, arg, help string, p *string) {
	s.add(short, long, arg, help, func(v string) error { *p = v; return nil })
}

func (s *optionSet) strs(short, long, arg, help string, p *[]string) {
	s.add(short, long, arg, help, func(v string) error { *p = append(*p, v); return nil })
}

func (s *optionSet) int(short, long, arg, help string, p *int, lo, hi int) {
	s.add(short, long, arg, help, func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("want a whole number from %d to %d, not %q", lo, hi, v)
		}
		*p = n
		return nil
	})
}

func (s *optionSet) dur(short, long, arg, help string, p *time.Duration) {
	s.add(short, long, arg, help, func(v string) error {
		d, err := parseSeconds(v)
		if err != nil {
			return err
		}
		*p = d
		return nil
	})
}

// parseSeconds reads a duration as mosquitto does, in whole seconds, or as
// a Go duration ("1m30s").
func parseSeconds(v string) (time.Duration, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want seconds or a duration such as 1m30s, not %q", v)
	}
	return d, nil
}

func (s *optionSet) lookup(name string, long bool) *option {
	for _, o := range s.opts {
		if !long && o.short == name {
			return o
		}
		if long {
			for _, l := range o.long {
				if l == name {
					return o
				}
			}
		}
	}
	return nil
}

// parse applies the options of args and returns the positional arguments.
// It returns errHelp for --help.
func (s *optionSet) parse(args []string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		if a == "--help" {
			return nil, errHelp
		}
		var o *option
		var val string
		hasVal := false
		if !strings.HasPrefix(a, "--") && len(a) > 2 && s.lookup(a[1:], true) != nil {
			// -store, -topic: the single-dash long form of earlier releases.
			a = "-" + a
		}
		if strings.HasPrefix(a, "--") {
			name := a[2:]
			if k := strings.IndexByte(name, '='); k >= 0 {
				name, val, hasVal = name[:k], name[k+1:], true
			}
			o = s.lookup(name, true)
		} else {
			name := a[1:2]
			o = s.lookup(name, false)
			if len(a) > 2 {
				// -t topic is the usual form; -ttopic is accepted too.
				val, hasVal = a[2:], true
			}
		}
		if o == nil {
			return nil, usageErrorf("%s: unknown option %s (see %s --help)", s.name, a, s.name)
		}
		switch {
		case o.arg == "" && hasVal:
			return nil, usageErrorf("%s: option %s takes no value", s.name, a)
		case o.arg != "" && !hasVal:
			if i+1 >= len(args) {
				return nil, usageErrorf("%s: option %s needs a value (%s)", s.name, a, o.arg)
			}
			i++
			val = args[i]
		}
		if err := o.set(val); err != nil {
			return nil, usageErrorf("%s: option %s: %v", s.name, a, err)
		}
	}
	return pos, nil
}

// parseCommand parses a command's args as parse does. For --help it
// prints the help (synopsis, then the options) on stdout and returns ok
// false and no error, so that the command returns nil and exits 0; ok is
// false on an error too, which the command returns.
func (s *optionSet) parseCommand(args []string, stdout io.Writer, synopsis string) (pos []string, ok bool, err error) {
	pos, err = s.parse(args)
	if errors.Is(err, errHelp) {
		s.printHelp(stdout, synopsis)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return pos, true, nil
}

// errHelp is returned by parse for --help: the command prints its help
// and exits 0.
var errHelp = errors.New("help requested")

// printHelp writes the options, sorted by their first name.
func (s *optionSet) printHelp(w io.Writer, synopsis string) {
	fmt.Fprintf(w, "usage: %s\n\noptions:\n", synopsis)
	opts := append([]*option(nil), s.opts...)
	key := func(o *option) string {
		if o.short != "" {
			return strings.ToLower(o.short) + o.short
		}
		return o.long[0]
	}
	sort.SliceStable(opts, func(i, j int) bool { return key(opts[i]) < key(opts[j]) })
	for _, o := range opts {
		var names []string
		if o.short != "" {
			names = append(names, "-"+o.short)
		}
		for _, l := range o.long {
			names = append(names, "--"+l)
		}
		head := strings.Join(names, ", ")
		if o.arg != "" {
			head += " " + o.arg
		}
		fmt.Fprintf(w, "  %-34s %s\n", head, o.help)
	}
}
