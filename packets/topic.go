package packets

import "strings"

// ValidTopicName reports whether s may be sent as a Topic Name: the topic
// of a PUBLISH or a Will, or a Response Topic. It returns nil, or an
// *Error matching ErrInvalidUTF8 or ErrMalformed for a string that cannot
// go on the wire, and ErrInvalidTopicName for an empty name
// (MQTT-4.7.3-1) or one holding a wildcard (MQTT-3.3.2-2, MQTT-3.3.2-14).
// Append applies it to every Topic Name it writes; a PUBLISH that uses a
// Topic Alias may still have an empty topic.
func ValidTopicName(s string) error {
	if err := checkString(s); err != nil {
		return err
	}
	return checkTopicName(s)
}

// checkTopicName applies the rules of ValidTopicName beyond those of any
// string, for a string that checkString accepted.
func checkTopicName(s string) error {
	switch {
	case s == "":
		return errorf(ErrInvalidTopicName, "empty topic name")
	case strings.IndexByte(s, '+') >= 0 || strings.IndexByte(s, '#') >= 0:
		// Two vectorised scans; ContainsAny goes a byte at a time.
		return errorf(ErrInvalidTopicName, "wildcard in topic name")
	}
	return nil
}

// ValidTopicFilter reports whether f may be sent as a Topic Filter in a
// SUBSCRIBE or UNSUBSCRIBE. It returns nil, or an *Error matching
// ErrInvalidUTF8 or ErrMalformed for a string that cannot go on the wire,
// and ErrInvalidTopicFilter for:
//   - an empty filter (MQTT-4.7.3-1);
//   - a "#" that is not a whole level or not the last one, as in "a/#/b"
//     or "a#" (MQTT-4.7.1-1);
//   - a "+" that is not a whole level, as in "a+" (MQTT-4.7.1-2);
//   - a shared subscription "$share/{ShareName}/{filter}" whose ShareName
//     is empty (MQTT-4.8.2-1) or holds "+" or "#", or that has no filter
//     after the ShareName (MQTT-4.8.2-2); the filter after it follows the
//     rules above.
//
// Append applies it to every filter of a SUBSCRIBE and an UNSUBSCRIBE, and
// Decode refuses such filters too.
func ValidTopicFilter(f string) error {
	if err := checkString(f); err != nil {
		return err
	}
	if f == "" {
		return errorf(ErrInvalidTopicFilter, "empty topic filter")
	}
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		name, filter, found := strings.Cut(rest, "/")
		switch {
		case name == "":
			return errorf(ErrInvalidTopicFilter, "empty share name")
		case strings.ContainsAny(name, "+#"):
			return errorf(ErrInvalidTopicFilter, "wildcard in share name")
		case !found || filter == "":
			return errorf(ErrInvalidTopicFilter, "no topic filter after the share name")
		}
		f = filter
	}
	for {
		level, rest, more := strings.Cut(f, "/")
		switch {
		case level == "#" && more:
			return errorf(ErrInvalidTopicFilter, "# not the last level")
		case level != "#" && strings.IndexByte(level, '#') >= 0:
			return errorf(ErrInvalidTopicFilter, "# not a whole level")
		case level != "+" && strings.IndexByte(level, '+') >= 0:
			return errorf(ErrInvalidTopicFilter, "+ not a whole level")
		}
		if !more {
			return nil
		}
		f = rest
	}
}
