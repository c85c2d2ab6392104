package cloudevents

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// ReadRequest reads the events of an HTTP request of the CloudEvents HTTP binding, in any
// content mode: binary (ce- headers, the body as data, Content-Type as datacontenttype),
// structured (Content-Type ContentTypeJSON) or batched (ContentTypeBatch, a JSON array;
// Batch reports it). It reads the body to its end; a caller limits its size
// (http.MaxBytesReader). Errors wrap ErrConversion, or are envelope.ErrInvalidEvent; a
// batch fails whole, naming the index of the first event that does not convert.
func ReadRequest(req *http.Request) (events []*envelope.Event, batch bool, err error) {
	var body []byte
	if req.Body != nil { // a server's request always has one; a client's may not
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, false, err
		}
	}
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt == ContentTypeBatch {
		var raw []json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, true, fmt.Errorf("%w: batch: %v", ErrConversion, err)
		}
		for i, r := range raw {
			ev, err := DecodeMessage(map[string][]string{"Content-Type": {ContentTypeJSON}}, r)
			if err != nil {
				return nil, true, fmt.Errorf("batch event %d: %w", i, err)
			}
			events = append(events, ev)
		}
		return events, true, nil
	}
	msg := cehttp.NewMessage(req.Header, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() == binding.EncodingUnknown {
		return nil, false, fmt.Errorf("%w: neither a structured event (Content-Type %s) nor a binary one (no ce-specversion header)", ErrConversion, ContentTypeJSON)
	}
	ce, err := binding.ToEvent(req.Context(), msg)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrConversion, err)
	}
	ev, err := FromCloudEvent(ce)
	if err != nil {
		return nil, false, err
	}
	return []*envelope.Event{ev}, false, nil
}

// NewRequest builds a POST of ev to url in mode, as a client of an ingress sends it.
// Errors are ToCloudEvent's, or the URL's.
func NewRequest(ctx context.Context, url string, ev *envelope.Event, mode Mode) (*http.Request, error) {
	if mode == Structured {
		// The same body as the NATS binding's: the SDK's HTTP writer would compact the
		// data's JSON, which must stay as it is.
		h, body, err := EncodeMessage(ev, Structured)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		maps.Copy(req.Header, h)
		return req, nil
	}
	ce, err := ToCloudEvent(ev)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return nil, err
	}
	if rec := typesRecord(ce, Binary); rec != "" {
		if err := ce.Context.SetExtension(TypesExtension, rec); err != nil {
			return nil, &AttributeError{Name: TypesExtension, Reason: err.Error()}
		}
	}
	if err := cehttp.WriteRequest(binding.WithForceBinary(ctx), (*binding.EventMessage)(ce), req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConversion, err)
	}
	return req, nil
}

// NewBatchRequest builds a POST of events to url in batched mode.
func NewBatchRequest(ctx context.Context, url string, events []*envelope.Event) (*http.Request, error) {
	// Written by hand: json.Marshal would compact each event's data, which must stay as it is.
	body := []byte{'['}
	for i, ev := range events {
		ce, err := ToCloudEvent(ev)
		if err != nil {
			return nil, fmt.Errorf("batch event %d: %w", i, err)
		}
		if rec := typesRecord(ce, Structured); rec != "" {
			if err := ce.Context.SetExtension(TypesExtension, rec); err != nil {
				return nil, &AttributeError{Name: TypesExtension, Reason: err.Error()}
			}
		}
		b, err := ce.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%w: batch event %d: %v", ErrConversion, i, err)
		}
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, b...)
	}
	body = append(body, ']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ContentTypeBatch)
	return req, nil
}
