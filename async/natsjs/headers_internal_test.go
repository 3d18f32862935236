package natsjs

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/transmanager/transmanager/async"
)

type stringer struct{}

func (stringer) String() string { return "from-stringer" }

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	sentAt := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
	stored := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name     string
		msg      async.Message
		wantMD   map[string]string
		wantName string
		wantSent time.Time
	}{
		{
			name: "well-known keys and other kinds of values",
			msg: async.NewMessage("orders.placed", "OrderPlaced", []byte("{}"), async.WithID("id-1"), async.WithSentAt(sentAt),
				async.WithMetadata(async.Metadata{
					async.MetaContentType:  "application/json",
					async.MetaPartitionKey: "order-7",
					async.MetaTraceParent:  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
					"count":                42,
					"flag":                 true,
					"bytes":                []byte("raw"),
					"stringer":             stringer{},
					"empty":                "",
					"Mixed-Case":           "kept",
				})),
			wantMD: map[string]string{
				async.MetaContentType:  "application/json",
				async.MetaPartitionKey: "order-7",
				async.MetaTraceParent:  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
				"count":                "42",
				"flag":                 "true",
				"bytes":                "raw",
				"stringer":             "from-stringer",
				"empty":                "",
				"Mixed-Case":           "kept",
			},
			wantName: "OrderPlaced",
			wantSent: sentAt,
		},
		{
			name: "envelope wins over metadata of the same name",
			msg: async.NewMessage("t", "Real", nil, async.WithID("id-2"), async.WithSentAt(sentAt),
				async.WithMetadata(async.Metadata{async.MetaMessageName: "Fake", async.MetaSentAt: "yesterday"})),
			wantMD:   map[string]string{},
			wantName: "Real",
			wantSent: sentAt,
		},
		{
			name:     "no name and zero sent time",
			msg:      &fixedMessage{id: "id-3", subject: "t"},
			wantMD:   map[string]string{},
			wantName: "",
			wantSent: stored,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := toNatsMsg("subject.x", tc.msg)
			if err != nil {
				t.Fatalf("toNatsMsg: %v", err)
			}
			if got := m.Header.Get(HeaderMsgID); got != tc.msg.ID() {
				t.Errorf("header %s = %q, want %q", HeaderMsgID, got, tc.msg.ID())
			}
			if m.Subject != "subject.x" {
				t.Errorf("subject = %q, want the topic", m.Subject)
			}
			// Through the wire format and back.
			h := decodeHeaders(t, m)
			e := fromNats(m.Subject, h, m.Data, "S", 9, stored)
			if e.ID() != tc.msg.ID() {
				t.Errorf("ID = %q, want %q", e.ID(), tc.msg.ID())
			}
			if e.MessageName() != tc.wantName {
				t.Errorf("MessageName = %q, want %q", e.MessageName(), tc.wantName)
			}
			if !e.SentAt().Equal(tc.wantSent) {
				t.Errorf("SentAt = %v, want %v", e.SentAt(), tc.wantSent)
			}
			if len(e.Metadata()) != len(tc.wantMD) {
				t.Errorf("Metadata = %v, want %v", e.Metadata(), tc.wantMD)
			}
			for k, want := range tc.wantMD {
				if got, ok := e.Metadata()[k]; !ok || got != want {
					t.Errorf("Metadata[%q] = %v (present %v), want %q", k, got, ok, want)
				}
			}
		})
	}
}

func TestFromNatsOtherProducer(t *testing.T) {
	t.Parallel()
	stored := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	h := nats.Header{
		"Nats-Expected-Stream": {"S"},
		"Status":               {"x"},
		"x-app":                {"first", "second"},
		HeaderSentAt:           {"not a time"},
	}
	e := fromNats("a.b", h, []byte("p"), "ORDERS", 17, stored)
	if e.ID() != "ORDERS:17" {
		t.Errorf("ID = %q, want the stream and sequence ORDERS:17", e.ID())
	}
	if !e.SentAt().Equal(stored) {
		t.Errorf("SentAt = %v, want the stream timestamp %v", e.SentAt(), stored)
	}
	want := async.Metadata{"x-app": "first"}
	if len(e.Metadata()) != 1 || e.Metadata()["x-app"] != "first" {
		t.Errorf("Metadata = %v, want %v (reserved headers dropped, first value kept)", e.Metadata(), want)
	}
}

func TestToNatsMsgRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		msg  async.Message
	}{
		{"empty ID", &fixedMessage{subject: "t"}},
		{"ID with a line break", &fixedMessage{id: "a\nb"}},
		{"ID with surrounding space", &fixedMessage{id: " a"}},
		{"name with a line break", &fixedMessage{id: "a", name: "x\r\n"}},
		{"key with a space", withMD("bad key", "v")},
		{"key with a colon", withMD("bad:key", "v")},
		{"empty key", withMD("", "v")},
		{"non-ASCII key", withMD("clé", "v")},
		{"reserved Nats- key", withMD("Nats-Expected-Stream", "S")},
		{"reserved key in lower case", withMD("nats-msg-id", "other")},
		{"reserved Status key", withMD("Status", "503")},
		{"value with a line break", withMD("k", "a\nb")},
		{"value with a carriage return", withMD("k", "a\rb")},
		{"value with leading space", withMD("k", " a")},
		{"value with trailing tab", withMD("k", "a\t")},
		{"value with trailing space", withMD("k", "a ")},
		{"value with leading tab", withMD("k", "\ta")},
		{"value that is only a space", withMD("k", " ")},
		{"non-string value with a line break", withMD("k", []byte("a\nb"))},
		{"key with DEL", withMD("k\x7f", "v")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := toNatsMsg("t", tc.msg)
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("toNatsMsg: %v, want an error matching ErrInvalidMessage", err)
			}
		})
	}
}

// FuzzHeaderValidity checks validHeaderKey and validHeaderValue against
// their definitions: a key is printable ASCII without the characters
// nats.go refuses; a value has no CR or LF and no surrounding space or tab.
func FuzzHeaderValidity(f *testing.F) {
	for _, s := range []string{"", "a", " a", "a\t", "content-type", "bad:key", "a\nb", "clé", "\x7f", "\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		wantValue := !strings.ContainsAny(s, "\r\n") && strings.Trim(s, " \t") == s
		if got := validHeaderValue(s); got != wantValue {
			t.Errorf("validHeaderValue(%q) = %v, want %v", s, got, wantValue)
		}
		wantKey := s != "" && !strings.ContainsFunc(s, func(r rune) bool {
			return r < 33 || r > 126 || strings.ContainsRune(invalidHeaderKeyChars, r)
		})
		if got := validHeaderKey(s); got != wantKey {
			t.Errorf("validHeaderKey(%q) = %v, want %v", s, got, wantKey)
		}
	})
}

func withMD(k string, v any) async.Message {
	return async.NewMessage("t", "N", nil, async.WithMetadata(async.Metadata{k: v}))
}

// decodeHeaders encodes m's headers as nats.go sends them and decodes them
// as nats.go reads them.
func decodeHeaders(t *testing.T, m *nats.Msg) nats.Header {
	t.Helper()
	var b []byte
	b = append(b, "NATS/1.0\r\n"...)
	for k, vs := range m.Header {
		for _, v := range vs {
			b = append(b, k+": "+v+"\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	h, err := nats.DecodeHeadersMsg(b)
	if err != nil {
		t.Fatalf("decode headers: %v", err)
	}
	return h
}

// fixedMessage is a Message with exactly the given fields.
type fixedMessage struct {
	id, subject, name string
}

func (m *fixedMessage) ID() string               { return m.id }
func (m *fixedMessage) Subject() string          { return m.subject }
func (m *fixedMessage) MessageName() string      { return m.name }
func (m *fixedMessage) Metadata() async.Metadata { return nil }
func (m *fixedMessage) SentAt() time.Time        { return time.Time{} }
func (m *fixedMessage) Data() []byte             { return nil }

// BenchmarkToNatsMsg measures the mapping of a relayed message (a content
// type and a partition key in its metadata) to the NATS message the
// publisher sends.
func BenchmarkToNatsMsg(b *testing.B) {
	msg := async.NewMessage("orders.placed", "OrderPlaced", make([]byte, 256), async.WithMetadata(async.Metadata{
		async.MetaContentType:  "application/json",
		async.MetaPartitionKey: "order-1234",
	}))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := toNatsMsg(msg.Subject(), msg); err != nil {
			b.Fatal(err)
		}
	}
}
