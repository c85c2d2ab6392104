package cloudevents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Mode is a binding's content mode.
type Mode int

const (
	// Binary puts each attribute in a header of its own ("ce-" and its name) and the data,
	// as it is, in the body: anything routing on an attribute sees it.
	Binary Mode = iota
	// Structured puts the whole event, in the JSON event format, in the body.
	Structured
)

// HeaderPrefix begins the name of every header that carries an attribute in binary mode.
const HeaderPrefix = "ce-"

// The content types of the JSON event format.
const (
	ContentTypeJSON  = "application/cloudevents+json"
	ContentTypeBatch = "application/cloudevents-batch+json"
)

// EncodeMessage writes ev as a message of the NATS binding: its headers (canonical names,
// as nats.Header and http.Header hold them) and its body, in mode. In binary mode every
// attribute, datacontenttype included, is a "ce-" header whose value is percent-encoded
// (space, double quote, percent and everything outside printable ASCII); in structured mode
// Content-Type is ContentTypeJSON and the body the JSON event format. Errors are
// ToCloudEvent's.
func EncodeMessage(ev *envelope.Event, mode Mode) (map[string][]string, []byte, error) {
	ce, err := ToCloudEvent(ev)
	if err != nil {
		return nil, nil, err
	}
	if rec := typesRecord(ce, mode); rec != "" {
		if err := ce.Context.SetExtension(TypesExtension, rec); err != nil {
			return nil, nil, &AttributeError{Name: TypesExtension, Reason: err.Error()}
		}
	}
	if mode == Structured {
		// MarshalJSON itself: json.Marshal would compact the data's JSON, which is the
		// event's bytes and must stay as they are.
		body, err := ce.MarshalJSON()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrConversion, err)
		}
		return map[string][]string{"Content-Type": {ContentTypeJSON}}, body, nil
	}
	h := map[string][]string{}
	put := func(name, value string) {
		h[textproto.CanonicalMIMEHeaderKey(HeaderPrefix+name)] = []string{percentEncode(value)}
	}
	put("specversion", ce.SpecVersion())
	put("id", ce.ID())
	put("source", ce.Source())
	put("type", ce.Type())
	for name, value := range map[string]string{"subject": ce.Subject(), "datacontenttype": ce.DataContentType(), "dataschema": ce.DataSchema()} {
		if value != "" {
			put(name, value)
		}
	}
	if !ce.Time().IsZero() {
		put("time", types.FormatTime(ce.Time()))
	}
	for name, value := range ce.Extensions() {
		text, err := types.Format(value)
		if err != nil {
			return nil, nil, &AttributeError{Name: name, Reason: err.Error()}
		}
		put(name, text)
	}
	return h, bytes.Clone(ce.Data()), nil
}

// DecodeMessage reads a message of the NATS binding: structured when its Content-Type is a
// CloudEvents format (application/cloudevents, matched without regard to case), binary
// otherwise. header names match without regard to case. The body is not retained. Errors
// wrap ErrConversion, or are envelope.ErrInvalidEvent.
func DecodeMessage(header map[string][]string, body []byte) (*envelope.Event, error) {
	ev := &envelope.Event{}
	if err := DecodeMessageInto(ev, header, body); err != nil {
		return nil, err
	}
	ev.Data = bytes.Clone(ev.Data)
	return ev, nil
}

// DecodeMessageInto is DecodeMessage into ev, which it overwrites whole, for a caller that
// reuses one Event per message (a source hands each to the runtime, which keeps none). ev's
// Data then shares body's memory in binary mode: copy it to keep it past body. Extensions
// reuses ev's map, cleared. On an error ev holds nothing of use.
func DecodeMessageInto(ev *envelope.Event, header map[string][]string, body []byte) error {
	ext := ev.Extensions
	clear(ext)
	*ev = envelope.Event{Extensions: ext}
	if isStructured(headerValue(header, "Content-Type")) {
		var ce event.Event
		if err := json.Unmarshal(body, &ce); err != nil {
			return fmt.Errorf("%w: structured event: %v", ErrConversion, err)
		}
		if err := ce.Validate(); err != nil {
			return fmt.Errorf("%w: %v", ErrConversion, err)
		}
		got, err := FromCloudEvent(&ce)
		if err != nil {
			return err
		}
		*ev = *got
		return nil
	}
	return decodeBinary(ev, header, body)
}

// decodeBinary reads a binary-mode message straight into an Event: the rules of the SDK's
// event (required attributes, a source and a data schema that parse as URIs, a media type
// that parses, a subject that is not blank) and FromCloudEvent's, without building the
// SDK's event first, which took most of a source's time per message.
func decodeBinary(ev *envelope.Event, header map[string][]string, body []byte) error {
	var typesRec string
	seen := 0
	const (
		sawSpec = 1 << iota
		sawID
		sawSource
		sawType
	)
	for name, values := range header {
		if len(name) <= len(HeaderPrefix) || !strings.EqualFold(name[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		attr := attrName(name[len(HeaderPrefix):])
		if len(values) != 1 {
			return &AttributeError{Name: attr, Reason: "more than one header carries it"}
		}
		value, err := percentDecode(unquote(values[0]))
		if err != nil {
			return &AttributeError{Name: attr, Reason: err.Error()}
		}
		fail := func(reason string) error { return &AttributeError{Name: attr, Reason: reason} }
		switch attr {
		case "specversion":
			if value != event.CloudEventsVersionV1 {
				return fail(fmt.Sprintf("%q is not 1.0", value))
			}
			ev.SpecVersion, seen = value, seen|sawSpec
		case "id":
			ev.ID, seen = value, seen|sawID
		case "source":
			if !validSources.known(value) {
				if _, err := url.Parse(value); err != nil {
					return fail(err.Error())
				}
				validSources.remember(value)
			}
			ev.Source, seen = value, seen|sawSource
		case "type":
			ev.Type, seen = value, seen|sawType
		case "subject":
			if strings.TrimSpace(value) != "" { // a blank subject is none, as the SDK reads it
				ev.Subject = value
			}
		case "datacontenttype":
			if !validMediaTypes.known(value) {
				if _, _, err := mime.ParseMediaType(value); err != nil {
					return fail(err.Error())
				}
				validMediaTypes.remember(value)
			}
			ev.DataContentType = value
		case "dataschema":
			if u, err := url.Parse(value); err != nil || !u.IsAbs() {
				return fail("not an absolute URI")
			}
			ev.DataSchema = value
		case "time":
			t, err := types.ParseTime(value)
			if err != nil {
				return fail(err.Error())
			}
			ev.Time = t
		case TypesExtension:
			typesRec = value
		default:
			if field, err := setField(ev, attr, value); field || err != nil {
				if err != nil {
					return err
				}
				continue
			}
			if !event.IsExtensionNameValid(attr) {
				return fail("not a CloudEvents extension name (ASCII letters and digits)")
			}
			if ev.Extensions == nil {
				ev.Extensions = map[string]string{}
			}
			ev.Extensions[attr] = value
		}
	}
	switch {
	case seen&sawSpec == 0:
		return &AttributeError{Name: "specversion", Reason: "missing: not a CloudEvent in binary mode"}
	case seen&sawID == 0 || strings.TrimSpace(ev.ID) == "":
		return &AttributeError{Name: "id", Reason: "missing or blank"}
	case seen&sawSource == 0 || ev.Source == "":
		return &AttributeError{Name: "source", Reason: "missing"}
	case seen&sawType == 0 || strings.TrimSpace(ev.Type) == "":
		return &AttributeError{Name: "type", Reason: "missing or blank"}
	}
	if typesRec != "" {
		if err := retype(ev, typesRec); err != nil {
			return err
		}
	}
	if len(body) > 0 {
		ev.Data = body
	}
	return envelope.Validate(ev)
}

// knownAttrs are the attributes and extensions an Event's fields carry, in lower case.
var knownAttrs = [...]string{"specversion", "id", "source", "type", "subject", "datacontenttype",
	"dataschema", "time", TypesExtension, ExtCorrelationID, ExtCausationID, ExtTraceParent,
	ExtTraceState, ExtIdempotencyKey, ExtPartitionKey, ExtAttempt, ExtDeadline}

// attrName is a header's attribute name in lower case: one of knownAttrs without an
// allocation (headers arrive in canonical case, "Ce-Id"), any other lowered.
func attrName(s string) string {
	for _, k := range knownAttrs {
		if len(k) == len(s) && strings.EqualFold(k, s) {
			return k
		}
	}
	return strings.ToLower(s)
}

// validSources and validMediaTypes remember the last source and data content type that
// parsed: a stream's events mostly share both, and parsing them took a fifth of a binary
// message's decoding.
var validSources, validMediaTypes lastValid

// lastValid is one string known to be valid. Safe for concurrent use.
type lastValid struct{ p atomic.Pointer[string] }

func (l *lastValid) known(s string) bool {
	p := l.p.Load()
	return p != nil && *p == s
}

func (l *lastValid) remember(s string) { l.p.Store(&s) }

// retype checks the extensions a TypesExtension record names against their types and
// writes them in their canonical form, with the record sorted, as FromCloudEvent does.
func retype(ev *envelope.Event, rec string) error {
	typed, err := extensionTypes(rec)
	if err != nil {
		return err
	}
	pairs := make([]string, 0, len(typed))
	for name, typ := range typed {
		text, ok := ev.Extensions[name]
		if !ok || fieldExtensions[name] {
			return &AttributeError{Name: TypesExtension, Reason: fmt.Sprintf("names %q, which is not an extension of the event", name)}
		}
		v, err := typedValue(name, text, typ)
		if err != nil {
			return err
		}
		if ev.Extensions[name], err = types.Format(v); err != nil {
			return &AttributeError{Name: name, Reason: err.Error()}
		}
		pairs = append(pairs, name+":"+typeName(v))
	}
	slices.Sort(pairs)
	ev.Extensions[TypesExtension] = strings.Join(pairs, ",")
	return nil
}

func headerValue(h map[string][]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// isStructured reports whether a Content-Type names a CloudEvents event format.
func isStructured(contentType string) bool {
	const format = "application/cloudevents"
	if t := strings.TrimSpace(contentType); len(t) < len(format) || !strings.EqualFold(t[:len(format)], format) {
		return false // a binary-mode message's data type, read without parsing it
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(contentType))
	}
	return strings.HasPrefix(mt, "application/cloudevents") && mt != ContentTypeBatch
}

// percentEncode encodes what a header value may not carry: space, double quote, percent,
// and every byte outside printable ASCII (so a character's every UTF-8 byte), in upper case.
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '%' || c >= 0x7f {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// percentDecode undoes one round of percent-encoding (either case), refusing a sequence
// that is not UTF-8 once decoded.
func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%q: a percent sign without two hex digits", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("%q: a percent sign without two hex digits", s)
		}
		b = append(b, byte(v))
		i += 2
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%q decodes to bytes that are not UTF-8", s)
	}
	return string(b), nil
}

// unquote undoes RFC 7230's quoted-string, which older senders used instead of encoding
// spaces and double quotes.
func unquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
