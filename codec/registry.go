package codec

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry chooses codecs: per topic for encoding, per content type for
// decoding.
//
// For encoding, a topic is matched against the registered patterns: an exact
// topic name ("orders.placed") or a prefix pattern ending in ".*"
// ("orders.*", which matches "orders.placed" and "orders.eu.placed" but not
// "orders"). The most specific match wins: an exact name beats every
// pattern and a longer prefix beats a shorter one. A topic that matches
// nothing uses the default codec.
//
// For decoding, the codec is chosen by the message's content type, not by
// its topic, so a topic can move to another codec while messages encoded
// with the old one are still in flight. A Registry decodes the content types
// of JSON, Msgpack and Protobuf from the start, plus those of its default
// codec, of every registered codec and of the codecs given to
// [Registry.Known].
//
// A Registry is safe for concurrent use. Lookups take no lock and do not
// allocate: the tables are replaced as a whole when a codec is registered,
// which is expected to happen rarely, typically at start-up. The zero value
// is ready to use and behaves as NewRegistry(nil). A Registry must not be
// copied after first use.
type Registry struct {
	mu    sync.Mutex // serialises writers
	table atomic.Pointer[registryTable]
}

// registryTable is an immutable snapshot of a Registry's codecs.
type registryTable struct {
	def    Codec
	exact  map[string]Codec // topic name -> codec
	prefix map[string]Codec // "orders" for the pattern "orders.*" -> codec
	// byType maps a lower-case media type (no parameters) to its decoder.
	byType map[string]Codec
}

// NewRegistry returns a registry that encodes with defaultCodec every topic
// no registered pattern matches; a nil defaultCodec means [JSON]. The
// registry decodes JSON, Msgpack, Protobuf and the default codec's content
// type from the start.
func NewRegistry(defaultCodec Codec) *Registry {
	r := &Registry{}
	r.table.Store(newRegistryTable(defaultCodec))
	return r
}

func newRegistryTable(def Codec) *registryTable {
	if def == nil {
		def = JSON()
	}
	t := &registryTable{
		def:    def,
		exact:  map[string]Codec{},
		prefix: map[string]Codec{},
		byType: map[string]Codec{},
	}
	t.know(JSON())
	t.know(Msgpack())
	t.know(Protobuf())
	t.know(def)
	return t
}

// load returns the current table, creating the default one for a zero
// Registry.
func (r *Registry) load() *registryTable {
	if t := r.table.Load(); t != nil {
		return t
	}
	r.table.CompareAndSwap(nil, newRegistryTable(nil))
	return r.table.Load()
}

// know makes c's content type decodable with c. Codecs without a content
// type are skipped.
func (t *registryTable) know(c Codec) {
	if c == nil {
		return
	}
	if mt := strings.ToLower(mediaType(c.ContentType())); mt != "" {
		t.byType[mt] = c
	}
}

func (t *registryTable) clone() *registryTable {
	return &registryTable{
		def:    t.def,
		exact:  maps.Clone(t.exact),
		prefix: maps.Clone(t.prefix),
		byType: maps.Clone(t.byType),
	}
}

// update applies fn to a copy of the current table and publishes the copy.
func (r *Registry) update(fn func(t *registryTable)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.load().clone()
	fn(t)
	r.table.Store(t)
}

// Register makes c the codec that encodes the topics matching pattern, and
// makes c's content type decodable with c. Registering a pattern again
// replaces its codec; that is how a topic switches codecs, and messages
// encoded with the former codec still decode by their content type.
//
// pattern is an exact topic name ("orders.placed") or a prefix followed by
// ".*" ("orders.*"), which matches every topic that starts with the prefix
// and a dot and goes on after the dot: one or more tokens, as NATS's
// "orders.>" does, not one token as NATS's "*". No other form is supported:
// Register returns an error matching [ErrInvalidPattern], naming the
// supported forms, for an empty pattern, "*" or ".*" alone, a "*" anywhere
// but in a final ".*", any ">" (NATS's "orders.>" is written "orders.*"
// here), and an empty token (a leading, trailing or double dot); and an
// error matching [ErrNilValue] for a nil codec. A codec whose ContentType is empty is refused too, since its
// messages could not be decoded by content type.
func (r *Registry) Register(pattern string, c Codec) error {
	prefix, isPattern, err := parsePattern(pattern)
	if err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("codec: register %q: %w: the codec is nil", pattern, ErrNilValue)
	}
	if mediaType(c.ContentType()) == "" {
		return fmt.Errorf("codec: register %q: the codec %T has no content type", pattern, c)
	}
	r.update(func(t *registryTable) {
		if isPattern {
			t.prefix[prefix] = c
		} else {
			t.exact[pattern] = c
		}
		t.know(c)
	})
	return nil
}

// supportedPatterns names the forms Register accepts, for its errors.
const supportedPatterns = `the supported forms are an exact topic ("orders.placed") and a prefix followed by ".*" ("orders.*", which matches every topic below the prefix, as NATS's "orders.>" does)`

// parsePattern validates pattern and returns the prefix of a ".*" pattern.
func parsePattern(pattern string) (prefix string, isPattern bool, err error) {
	invalid := func(why string) (string, bool, error) {
		return "", false, fmt.Errorf("%w %q: %s; %s", ErrInvalidPattern, pattern, why, supportedPatterns)
	}
	switch {
	case pattern == "":
		return "", false, fmt.Errorf("%w: empty pattern; %s", ErrInvalidPattern, supportedPatterns)
	case strings.Contains(pattern, ">"):
		return invalid(`">" is not supported`)
	case pattern == "*" || pattern == ".*":
		return invalid(`a pattern needs a prefix before ".*"; the default codec serves every other topic`)
	case strings.Count(pattern, "*") > 1 || (strings.Contains(pattern, "*") && !strings.HasSuffix(pattern, ".*")):
		return invalid(`"*" may only end a pattern, after a dot, and matches one or more tokens`)
	}
	name := strings.TrimSuffix(pattern, ".*")
	if slices.Contains(strings.Split(name, "."), "") {
		return invalid("a topic has no empty tokens (no leading, trailing or double dots)")
	}
	return name, name != pattern, nil
}

// Known makes the content types of codecs decodable, without using them to
// encode any topic. A codec replaces the one known before for the same
// content type. Nil codecs and codecs without a content type are ignored.
func (r *Registry) Known(codecs ...Codec) {
	r.update(func(t *registryTable) {
		for _, c := range codecs {
			t.know(c)
		}
	})
}

// For returns the codec that encodes messages for topic: the codec
// registered for the exact topic name, else the one of the longest matching
// ".*" pattern, else the default codec.
func (r *Registry) For(topic string) Codec {
	t := r.load()
	if c, ok := t.exact[topic]; ok {
		return c
	}
	if len(t.prefix) > 0 {
		// The candidates are the topic's prefixes that end before a dot,
		// longest first; the part after the dot must not be empty.
		for i := strings.LastIndexByte(topic, '.'); i > 0; i = strings.LastIndexByte(topic[:i], '.') {
			if i == len(topic)-1 {
				continue
			}
			if c, ok := t.prefix[topic[:i]]; ok {
				return c
			}
		}
	}
	return t.def
}

// ByContentType returns the codec that decodes contentType. Matching ignores
// case and parameters: "Application/JSON; charset=utf-8" finds the JSON
// codec. An unknown or empty content type returns an error matching
// [ErrUnknownContentType].
func (r *Registry) ByContentType(contentType string) (Codec, error) {
	if c := r.load().lookup(contentType); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownContentType, contentType)
}

func (t *registryTable) lookup(contentType string) Codec {
	mt := mediaType(contentType)
	if c, ok := t.byType[mt]; ok {
		return c
	}
	if mt == "" {
		return nil
	}
	for k, c := range t.byType { // keys are lower case; mt may not be
		if strings.EqualFold(k, mt) {
			return c
		}
	}
	return nil
}

// Encode encodes v with the codec for topic (see [Registry.For]) and returns
// the data and that codec's content type, to be stored in the message's
// metadata.
func (r *Registry) Encode(topic string, v any) (data []byte, contentType string, err error) {
	c := r.For(topic)
	data, err = c.Encode(v)
	return data, c.ContentType(), err
}

// Decode decodes data into v with the codec for contentType (see
// [Registry.ByContentType]). An empty contentType, from a producer that did
// not record one, falls back to the codec that encodes topic now
// ([Registry.For]). An unknown content type returns an error matching
// [ErrUnknownContentType].
func (r *Registry) Decode(topic, contentType string, data []byte, v any) error {
	t := r.load()
	var c Codec
	if contentType == "" {
		c = r.For(topic)
	} else if c = t.lookup(contentType); c == nil {
		return fmt.Errorf("%w %q (topic %q)", ErrUnknownContentType, contentType, topic)
	}
	return c.Decode(data, v)
}

// mediaType strips the parameters and surrounding spaces of a content type.
func mediaType(contentType string) string {
	if i := strings.IndexByte(contentType, ';'); i >= 0 {
		contentType = contentType[:i]
	}
	return strings.TrimSpace(contentType)
}
