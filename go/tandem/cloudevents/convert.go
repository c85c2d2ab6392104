package cloudevents

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The extensions that carry fields of a tandem Event.
const (
	ExtCorrelationID  = "correlationid"
	ExtCausationID    = "causationid"
	ExtTraceParent    = "traceparent"
	ExtTraceState     = "tracestate"
	ExtIdempotencyKey = "idempotencykey"
	ExtPartitionKey   = "partitionkey"
	ExtAttempt        = "tandemattempt"
	ExtDeadline       = "tandemdeadline"
	// TypesExtension records the CloudEvents types of the extensions in Event.Extensions
	// that are not strings, as comma-separated name:type pairs sorted by name (for example
	// "count:Integer,retry:Boolean"). It is reserved: a CloudEvents event may not carry it.
	TypesExtension = "tandemtypes"
)

// ErrConversion is what every conversion error wraps: errors.Is(err, ErrConversion) holds
// for an *AttributeError and for a malformed or unsupported event.
var ErrConversion = errors.New("tandem: cloudevents: cannot convert the event")

// AttributeError says which attribute or extension kept an event from converting, and why.
// errors.Is(err, ErrConversion) holds. A plain value, safe to share.
type AttributeError struct {
	// Name is the CloudEvents attribute or extension name.
	Name string
	// Reason says what is wrong with it.
	Reason string
}

// Error names the attribute and the reason.
func (e *AttributeError) Error() string {
	return fmt.Sprintf("tandem: cloudevents: attribute %q: %s", e.Name, e.Reason)
}

// Is reports whether target is ErrConversion.
func (e *AttributeError) Is(target error) bool { return target == ErrConversion }

// fieldExtensions are the extensions that are fields of an Event; none may appear in
// Event.Extensions.
var fieldExtensions = map[string]bool{
	ExtCorrelationID: true, ExtCausationID: true, ExtTraceParent: true, ExtTraceState: true,
	ExtIdempotencyKey: true, ExtPartitionKey: true, ExtAttempt: true, ExtDeadline: true,
	TypesExtension: true,
}

// ceType names the CloudEvents types as the type system does.
var ceTypes = map[string]bool{"Boolean": true, "Integer": true, "Binary": true, "URI": true, "URI-reference": true, "Timestamp": true}

// FromCloudEvent converts a CloudEvents event into a tandem Event, valid for Submit. The
// result shares nothing with ce. Errors wrap ErrConversion (an *AttributeError names the
// attribute) or envelope.ErrInvalidEvent.
func FromCloudEvent(ce *event.Event) (*envelope.Event, error) {
	if ce == nil {
		return nil, fmt.Errorf("%w: nil event", ErrConversion)
	}
	if v := ce.SpecVersion(); v != event.CloudEventsVersionV1 {
		return nil, &AttributeError{Name: "specversion", Reason: fmt.Sprintf("%q is not 1.0", v)}
	}
	ev := &envelope.Event{
		ID: ce.ID(), Source: ce.Source(), Type: ce.Type(), SpecVersion: ce.SpecVersion(),
		Time: ce.Time(), Subject: ce.Subject(), DataContentType: ce.DataContentType(),
		DataSchema: ce.DataSchema(),
	}
	if len(ce.Data()) > 0 {
		ev.Data = slices.Clone(ce.Data())
	}
	exts, err := typedExtensions(ce)
	if err != nil {
		return nil, err
	}
	var typed []string
	for _, name := range slices.Sorted(maps.Keys(exts)) {
		value := exts[name]
		text, err := types.Format(value)
		if err != nil {
			return nil, &AttributeError{Name: name, Reason: err.Error()}
		}
		field, err := setField(ev, name, text)
		switch {
		case err != nil:
			return nil, err
		case !field:
			if ev.Extensions == nil {
				ev.Extensions = map[string]string{}
			}
			ev.Extensions[name] = text
			if t := typeName(value); t != "String" {
				typed = append(typed, name+":"+t)
			}
		}
	}
	if len(typed) > 0 {
		ev.Extensions[TypesExtension] = strings.Join(typed, ",")
	}
	if err := envelope.Validate(ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// setField sets the Event field an extension of the mapping carries (its canonical text),
// and reports whether name is one; an Attempt or Deadline that does not parse is an
// *AttributeError.
func setField(ev *envelope.Event, name, text string) (bool, error) {
	switch name {
	case ExtCorrelationID:
		ev.CorrelationID = text
	case ExtCausationID:
		ev.CausationID = text
	case ExtTraceParent:
		ev.TraceParent = text
	case ExtTraceState:
		ev.TraceState = text
	case ExtIdempotencyKey:
		ev.IdempotencyKey = text
	case ExtPartitionKey:
		ev.PartitionKey = text
	case ExtAttempt:
		n, err := strconv.ParseUint(text, 10, 32)
		if err != nil || n == 0 {
			return true, &AttributeError{Name: name, Reason: fmt.Sprintf("%q is not a delivery number from 1", text)}
		}
		ev.Attempt = uint32(n)
	case ExtDeadline:
		t, err := types.ParseTime(text)
		if err != nil {
			return true, &AttributeError{Name: name, Reason: err.Error()}
		}
		ev.Deadline = t
	default:
		return false, nil
	}
	return true, nil
}

// typedExtensions are ce's extensions with the types TypesExtension records, when it is
// there (a binding that carries values as text lost them), restored; the record itself
// is left out.
func typedExtensions(ce *event.Event) (map[string]any, error) {
	exts := ce.Extensions()
	rec, ok := exts[TypesExtension]
	if !ok {
		return exts, nil
	}
	text, err := types.Format(rec)
	if err != nil {
		return nil, &AttributeError{Name: TypesExtension, Reason: err.Error()}
	}
	typed, err := extensionTypes(text)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(exts))
	for name, v := range exts {
		if name != TypesExtension {
			out[name] = v
		}
	}
	for name, typ := range typed {
		v, ok := out[name]
		if !ok || fieldExtensions[name] {
			return nil, &AttributeError{Name: TypesExtension, Reason: fmt.Sprintf("names %q, which is not an extension of the event", name)}
		}
		text, err := types.Format(v)
		if err != nil {
			return nil, &AttributeError{Name: name, Reason: err.Error()}
		}
		if out[name], err = typedValue(name, text, typ); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// typesRecord is TypesExtension's value for ce's extensions whose types a binding loses:
// every type but String in binary mode (all loses), those JSON has no value for in
// structured mode ("" when there is none).
func typesRecord(ce *event.Event, mode Mode) string {
	var rec []string
	for _, name := range slices.Sorted(maps.Keys(ce.Extensions())) {
		t := typeName(ce.Extensions()[name])
		if t == "String" || fieldExtensions[name] || (mode == Structured && (t == "Integer" || t == "Boolean")) {
			continue
		}
		rec = append(rec, name+":"+t)
	}
	return strings.Join(rec, ",")
}

// typeName is the CloudEvents type of an extension's value as the SDK holds it.
func typeName(v any) string {
	switch v.(type) {
	case bool:
		return "Boolean"
	case int32:
		return "Integer"
	case []byte:
		return "Binary"
	case types.URI, *url.URL:
		return "URI"
	case types.URIRef:
		return "URI-reference"
	case types.Timestamp, time.Time:
		return "Timestamp"
	}
	return "String"
}

// ToCloudEvent converts a tandem Event into a CloudEvents event. Data is set byte for
// byte; in structured mode it is written as the JSON value of "data" when DataContentType
// is JSON (or empty) and the bytes are JSON, as a string when it is text and the bytes are
// UTF-8, and as "data_base64" otherwise. Errors wrap ErrConversion (an *AttributeError
// names the attribute) or envelope.ErrInvalidEvent.
func ToCloudEvent(ev *envelope.Event) (*event.Event, error) {
	if err := envelope.Validate(ev); err != nil {
		return nil, err
	}
	if ev.SpecVersion != "" && ev.SpecVersion != event.CloudEventsVersionV1 {
		return nil, &AttributeError{Name: "specversion", Reason: fmt.Sprintf("%q is not 1.0", ev.SpecVersion)}
	}
	ce := event.New(event.CloudEventsVersionV1)
	ce.SetID(ev.ID)
	ce.SetSource(ev.Source)
	ce.SetType(ev.Type)
	if !ev.Time.IsZero() {
		ce.SetTime(ev.Time.UTC())
	}
	if ev.Subject != "" {
		ce.SetSubject(ev.Subject)
	}
	if ev.DataSchema != "" {
		if _, err := url.Parse(ev.DataSchema); err != nil {
			return nil, &AttributeError{Name: "dataschema", Reason: err.Error()}
		}
		ce.SetDataSchema(ev.DataSchema)
	}
	typed, err := extensionTypes(ev.Extensions[TypesExtension])
	if err != nil {
		return nil, err
	}
	set := func(name string, value any) error {
		if err := ce.Context.SetExtension(name, value); err != nil {
			return &AttributeError{Name: name, Reason: err.Error()}
		}
		return nil
	}
	for name, value := range map[string]string{
		ExtCorrelationID: ev.CorrelationID, ExtCausationID: ev.CausationID,
		ExtTraceParent: ev.TraceParent, ExtTraceState: ev.TraceState,
		ExtIdempotencyKey: ev.IdempotencyKey, ExtPartitionKey: ev.PartitionKey,
	} {
		if value != "" {
			if err := set(name, value); err != nil {
				return nil, err
			}
		}
	}
	if ev.Attempt != 0 {
		if err := set(ExtAttempt, int32(min(ev.Attempt, 1<<31-1))); err != nil {
			return nil, err
		}
	}
	if !ev.Deadline.IsZero() {
		if err := set(ExtDeadline, ev.Deadline.UTC()); err != nil {
			return nil, err
		}
	}
	for name, text := range ev.Extensions {
		if name == TypesExtension {
			continue
		}
		if fieldExtensions[name] {
			return nil, &AttributeError{Name: name, Reason: "an Event field carries this extension; set the field instead"}
		}
		if !event.IsExtensionNameValid(name) {
			return nil, &AttributeError{Name: name, Reason: "not a CloudEvents extension name (ASCII letters and digits)"}
		}
		value, err := typedValue(name, text, typed[name])
		if err != nil {
			return nil, err
		}
		if err := set(name, value); err != nil {
			return nil, err
		}
	}
	for name := range typed {
		if _, ok := ev.Extensions[name]; !ok {
			return nil, &AttributeError{Name: TypesExtension, Reason: fmt.Sprintf("names %q, which the event does not carry", name)}
		}
	}
	if len(ev.Data) > 0 || ev.DataContentType != "" {
		ce.SetDataContentType(ev.DataContentType)
	}
	if len(ev.Data) > 0 {
		ce.DataEncoded = slices.Clone(ev.Data)
		ce.DataBase64 = !inlineData(ev.DataContentType, ev.Data)
	}
	if err := ce.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConversion, err)
	}
	return &ce, nil
}

// inlineData reports whether data can be written as the JSON value of "data" in structured
// mode and read back byte for byte: JSON bytes of a JSON content type, or UTF-8 text of any
// other (which the JSON format writes as a string).
func inlineData(contentType string, data []byte) bool {
	mediaType := "application/json"
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return false
		}
		mediaType = mt
	}
	if isJSON(mediaType) {
		return json.Valid(data)
	}
	return strings.HasPrefix(mediaType, "text/") && utf8.Valid(data)
}

// isJSON is the JSON format's rule: the data of these media types is a JSON value.
func isJSON(mediaType string) bool {
	return mediaType == "application/json" || mediaType == "text/json" ||
		(strings.HasPrefix(mediaType, "application/") && strings.HasSuffix(mediaType, "+json"))
}

// extensionTypes parses TypesExtension's value.
func extensionTypes(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	for pair := range strings.SplitSeq(s, ",") {
		name, typ, ok := strings.Cut(pair, ":")
		if !ok || name == "" || !ceTypes[typ] {
			return nil, &AttributeError{Name: TypesExtension, Reason: fmt.Sprintf("%q is not name:type with a CloudEvents type other than String", pair)}
		}
		out[name] = typ
	}
	return out, nil
}

// typedValue is an extension's value in the type recorded for it.
func typedValue(name, text, typ string) (any, error) {
	var v any
	var err error
	switch typ {
	case "":
		return text, nil
	case "Boolean":
		v, err = types.ToBool(text)
	case "Integer":
		v, err = types.ToInteger(text)
	case "Binary":
		v, err = types.ToBinary(text)
	case "URI":
		var u *url.URL
		if u, err = types.ToURL(text); err == nil {
			v = types.URI{URL: *u}
		}
	case "URI-reference":
		var u *url.URL
		if u, err = types.ToURL(text); err == nil {
			v = types.URIRef{URL: *u}
		}
	case "Timestamp":
		v, err = types.ToTime(text)
	}
	if err != nil {
		return nil, &AttributeError{Name: name, Reason: fmt.Sprintf("%q is not a %s: %v", text, typ, err)}
	}
	return v, nil
}
