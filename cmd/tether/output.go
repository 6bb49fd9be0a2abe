package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tethermq/tether/client"
)

// escapeTerminal returns b with everything a terminal could take for a
// control sequence written as an escape: C0 controls but tab and newline,
// DEL, C1 controls (U+0080 to U+009F, which some terminals honour as
// CSI, OSC and the like) and bytes that are not UTF-8, as \xNN or \uNNNN.
// A payload or Reason String from a server then cannot move the cursor,
// retitle the window, or hide text.
func escapeTerminal(b []byte, keepNewlines bool) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&sb, `\x%02x`, b[0])
		case r == '\t', r == '\n' && keepNewlines:
			sb.WriteRune(r)
		case r < 0x20, r == 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&sb, `\u%04x`, r)
		default:
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}

// credentialsInURL matches the password part of a URL's user information.
var credentialsInURL = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:)[^@\s]*@`)

// redactor removes secrets from text the command prints: passwords in
// URLs, and the passwords the command was given.
type redactor struct{ secrets []string }

func (r *redactor) add(s string) {
	if s != "" {
		r.secrets = append(r.secrets, s)
	}
}

func (r *redactor) redact(s string) string {
	s = credentialsInURL.ReplaceAllString(s, "${1}xxxxx@")
	for _, p := range r.secrets {
		s = strings.ReplaceAll(s, p, "xxxxx")
	}
	return s
}

// isTerminal reports whether f is a character device, as a terminal is.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// formatter prints received messages in one of the output formats.
type formatter struct {
	verbose bool   // -v: topic, space, payload
	format  string // -F: a mosquitto_sub format string; "json" or "%j" for JSON
	noEOL   bool   // -N
	escape  bool   // escape terminal controls in topics and payloads
}

func (f *formatter) text(b []byte) string {
	if f.escape {
		return escapeTerminal(b, true)
	}
	return string(b)
}

// format returns the line printed for m, its end of line included.
func (f *formatter) line(m *client.Message, now time.Time) string {
	var s string
	switch {
	case f.format == "json" || f.format == "%j" || f.format == "%J":
		s = jsonMessage(m, now)
	case f.format != "":
		s = f.custom(m, now)
	case f.verbose:
		s = f.text([]byte(m.Topic)) + " " + f.text(m.Payload)
	default:
		s = f.text(m.Payload)
	}
	if f.noEOL {
		return s
	}
	return s + "\n"
}

// custom expands a mosquitto_sub -F format: %t topic, %p payload, %x and
// %X payload in hex, %l length, %q QoS, %r retain, %m packet identifier,
// %I ISO 8601 time, %U Unix time, %j JSON, %% a percent sign; \n, \t, \\
// and \e? are not interpreted but \n and \t are.
func (f *formatter) custom(m *client.Message, now time.Time) string {
	var sb strings.Builder
	in := f.format
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c == '\\' && i+1 < len(in) {
			switch in[i+1] {
			case 'n':
				sb.WriteByte('\n')
			case 't':
				sb.WriteByte('\t')
			case '\\':
				sb.WriteByte('\\')
			default:
				sb.WriteByte(c)
				sb.WriteByte(in[i+1])
			}
			i++
			continue
		}
		if c != '%' || i+1 >= len(in) {
			sb.WriteByte(c)
			continue
		}
		i++
		switch in[i] {
		case 't':
			sb.WriteString(f.text([]byte(m.Topic)))
		case 'p':
			sb.WriteString(f.text(m.Payload))
		case 'x':
			sb.WriteString(hex.EncodeToString(m.Payload))
		case 'X':
			sb.WriteString(strings.ToUpper(hex.EncodeToString(m.Payload)))
		case 'l':
			sb.WriteString(strconv.Itoa(len(m.Payload)))
		case 'q':
			sb.WriteString(strconv.Itoa(int(m.QoS)))
		case 'r':
			if m.Retain {
				sb.WriteByte('1')
			} else {
				sb.WriteByte('0')
			}
		case 'm':
			sb.WriteString(strconv.Itoa(int(m.PacketID)))
		case 'I':
			sb.WriteString(now.Format(time.RFC3339))
		case 'U':
			sb.WriteString(strconv.FormatInt(now.Unix(), 10))
		case 'j', 'J':
			sb.WriteString(jsonMessage(m, now))
		case '%':
			sb.WriteByte('%')
		default:
			sb.WriteByte('%')
			sb.WriteByte(in[i])
		}
	}
	return sb.String()
}

// jsonMsg is the JSON form of a received message. JSON strings escape
// every control character, so it is safe on a terminal as it is.
type jsonMsg struct {
	Time          string     `json:"tst"`
	Topic         string     `json:"topic"`
	QoS           byte       `json:"qos"`
	Retain        bool       `json:"retain"`
	Dup           bool       `json:"dup,omitempty"`
	PayloadLen    int        `json:"payloadlen"`
	Payload       *string    `json:"payload,omitempty"`
	PayloadBase64 *string    `json:"payload_base64,omitempty"`
	Properties    *jsonProps `json:"properties,omitempty"`
}

type jsonProps struct {
	PayloadFormat   byte                `json:"payload-format-indicator,omitempty"`
	MessageExpiry   *uint32             `json:"message-expiry-interval,omitempty"`
	ContentType     string              `json:"content-type,omitempty"`
	ResponseTopic   string              `json:"response-topic,omitempty"`
	CorrelationData string              `json:"correlation-data,omitempty"` // base64
	SubscriptionIDs []uint32            `json:"subscription-identifier,omitempty"`
	User            []map[string]string `json:"user-properties,omitempty"`
}

func jsonMessage(m *client.Message, now time.Time) string {
	j := jsonMsg{Time: now.Format(time.RFC3339Nano), Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Dup: m.Dup, PayloadLen: len(m.Payload)}
	if utf8.Valid(m.Payload) {
		s := string(m.Payload)
		j.Payload = &s
	} else {
		s := base64.StdEncoding.EncodeToString(m.Payload)
		j.PayloadBase64 = &s
	}
	p := m.Properties
	jp := jsonProps{PayloadFormat: p.PayloadFormat, MessageExpiry: p.MessageExpiry, ContentType: p.ContentType,
		ResponseTopic: p.ResponseTopic, SubscriptionIDs: p.SubscriptionIdentifier}
	if len(p.CorrelationData) > 0 {
		jp.CorrelationData = base64.StdEncoding.EncodeToString(p.CorrelationData)
	}
	for _, u := range p.User {
		jp.User = append(jp.User, map[string]string{u.Key: u.Value})
	}
	if jp.PayloadFormat != 0 || jp.MessageExpiry != nil || jp.ContentType != "" || jp.ResponseTopic != "" ||
		jp.CorrelationData != "" || len(jp.SubscriptionIDs) > 0 || len(jp.User) > 0 {
		j.Properties = &jp
	}
	b, err := json.Marshal(j)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return jsonC1.Replace(string(b))
}

// jsonC1 escapes what encoding/json leaves raw and a terminal may still
// honour: DEL and the C1 controls.
var jsonC1 = func() *strings.Replacer {
	var pairs []string
	pairs = append(pairs, "\x7f", `\u007f`)
	for r := rune(0x80); r <= 0x9f; r++ {
		pairs = append(pairs, string(r), fmt.Sprintf(`\u%04x`, r))
	}
	return strings.NewReplacer(pairs...)
}()
