package sqlstore

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/transmanager/transmanager/async"
)

var metadataSamples = []string{
	`{"content-type": "application/json", "partition-key": "order-42", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`,
	`{"content-type":"application/json","partition-key":"order-42"}`,
	`{}`,
	` { } `,
	`{"a": "b", "a": "c"}`,
	`{"k": "\u00e9t\u00e9"}`,
	`{"k": "été"}`,
	`{"k": "a\"b"}`,
	`{"n": 1}`,
	`{"nested": {"a": "b"}}`,
	`{"a": "b",}`,
	`{"a" "b"}`,
	`{"a": "b"} x`,
	`["a"]`,
	`null`,
	`{"a": "b"`,
	"{\"a\": \"\xff\"}",
	"{\"a\": \"x\ty\"}",
}

// FuzzDecodeMetadata: the fast path for flat string objects decodes
// exactly what json.Unmarshal does, and decodeMetadata accepts and rejects
// what json.Unmarshal does.
func FuzzDecodeMetadata(f *testing.F) {
	for _, s := range metadataSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		want := async.Metadata{}
		wantErr := json.Unmarshal(b, &want)
		if fast, ok := decodeFlatStrings(b); ok {
			if wantErr != nil {
				t.Fatalf("fast path decoded %q, which json.Unmarshal rejects: %v", b, wantErr)
			}
			if !reflect.DeepEqual(fast, want) {
				t.Fatalf("fast path decoded %q as %v, json.Unmarshal as %v", b, fast, want)
			}
		}
		got, err := decodeMetadata(b)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("decodeMetadata(%q) error %v, json.Unmarshal %v", b, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeMetadata(%q) = %v, json.Unmarshal %v", b, got, want)
		}
	})
}

// TestDecodeFlatStringsTakesTheCommonShape: the metadata the stores write
// and PostgreSQL's jsonb prints takes the fast path.
func TestDecodeFlatStringsTakesTheCommonShape(t *testing.T) {
	for _, s := range metadataSamples[:4] {
		if _, ok := decodeFlatStrings([]byte(s)); !ok {
			t.Errorf("%s: not decoded by the fast path", s)
		}
	}
	for _, s := range []string{`{"n": 1}`, `{"k": "a\"b"}`, `{"a": "b",}`, "{\"a\": \"\xff\"}"} {
		if _, ok := decodeFlatStrings([]byte(s)); ok {
			t.Errorf("%s: decoded by the fast path", s)
		}
	}
}

// FuzzEncodeMetadata: encodeMetadata writes what json.Marshal does, byte
// for byte, whether the fast path takes the metadata or not, and the fast
// path takes the common shape.
func FuzzEncodeMetadata(f *testing.F) {
	f.Add("content-type", "application/json", "partition-key", "order-42")
	f.Add("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a", "")
	f.Add("k", "a\"b", "<", "&")
	f.Add("été", "\xff", "x\ty", "\u2028")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		for _, md := range []async.Metadata{{k1: v1}, {k1: v1, k2: v2}, {k1: v1, k2: 7}} {
			want, err := json.Marshal(md)
			if err != nil {
				t.Fatal(err)
			}
			got, err := encodeMetadata(md)
			if err != nil || got != string(want) {
				t.Fatalf("encodeMetadata(%#v) = %q, %v; json.Marshal gives %q", md, got, err, want)
			}
		}
	})
}

func TestEncodeFlatStringsTakesTheCommonShape(t *testing.T) {
	md := async.Metadata{"content-type": "application/json", "partition-key": "order-42", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if _, ok := encodeFlatStrings(md); !ok {
		t.Errorf("%v: not encoded by the fast path", md)
	}
	for _, md := range []async.Metadata{{"n": 1}, {"k": "a\"b"}, {"k": "<b>"}, {"k": "é"}, {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9"}} {
		if _, ok := encodeFlatStrings(md); ok {
			t.Errorf("%v: encoded by the fast path", md)
		}
	}
}

func BenchmarkEncodeMetadata(b *testing.B) {
	md := async.Metadata{"content-type": "application/json", "partition-key": "order-42"}
	b.Run("impl=json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(md); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=store", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeMetadata(md); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeMetadata(b *testing.B) {
	md := []byte(metadataSamples[0])
	b.Run("impl=json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := async.Metadata{}
			if err := json.Unmarshal(md, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=store", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeMetadata(md); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDBIntAndBool: the text scanners read what MySQL's text protocol and
// the other drivers give, NULL as zero, and refuse the rest with an error.
func TestDBIntAndBool(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int64
	}{
		{nil, 0}, {int64(-7), -7}, {[]byte("9223372036854775807"), 9223372036854775807}, {[]byte("-12"), -12}, {[]byte("0"), 0},
	} {
		var d dbInt
		if err := d.Scan(tc.in); err != nil || d.n != tc.want {
			t.Errorf("dbInt.Scan(%#v) = %d, %v; want %d", tc.in, d.n, err, tc.want)
		}
		var b bool
		if err := (dbBool{&b}).Scan(tc.in); err != nil || b != (tc.want != 0) {
			t.Errorf("dbBool.Scan(%#v) = %v, %v; want %v", tc.in, b, err, tc.want != 0)
		}
	}
	for _, bad := range []any{[]byte(""), []byte("1.5"), []byte("x"), []byte("99999999999999999999"), "1", 1.0} {
		var d dbInt
		if err := d.Scan(bad); err == nil {
			t.Errorf("dbInt.Scan(%#v) = %d, want an error", bad, d.n)
		}
		var b bool
		if err := (dbBool{&b}).Scan(bad); err == nil {
			t.Errorf("dbBool.Scan(%#v) = %v, want an error", bad, b)
		}
	}
	var b bool
	if err := (dbBool{&b}).Scan(true); err != nil || !b {
		t.Errorf("dbBool.Scan(true) = %v, %v", b, err)
	}
	text := any([]byte("123456789"))
	var d dbInt
	if n := testing.AllocsPerRun(100, func() { _ = d.Scan(text) }); n != 0 {
		t.Errorf("dbInt.Scan of text allocates %v times, want 0", n)
	}
}
