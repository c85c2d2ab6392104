package cloudevents

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// Options configure an ingress.
type Options struct {
	// Reply makes the ingress Call each event and answer 200 with its reply as the body;
	// without it the ingress Submits and answers 202 once the runtime has accepted the
	// event (its outcome follows later, through retries and dead letters).
	Reply bool
	// ReplyContentType is the Content-Type of a reply (default application/octet-stream).
	ReplyContentType string
	// MaxBody bounds a request's body in bytes (default 4 MiB); a larger one is 413.
	MaxBody int64
}

// Result is what the ingress answers for one event of a request that failed, as JSON: the
// event's ID (when it was read), the HTTP status its own outcome maps to, and the error.
type Result struct {
	ID     string `json:"id,omitempty"`
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
	// Code is the error envelope's code when a handler failed (a Call), else empty.
	Code string `json:"code,omitempty"`
}

// Handler serves POST of CloudEvents into rt, in binary, structured or batched mode (see
// ReadRequest). It answers:
//
//   - 202 when every event was accepted (Submit), or 200 with the reply (Reply, single
//     events only);
//   - 400 for a request that does not read as CloudEvents or an event tandem refuses as
//     invalid, with the error; 413 for a body past MaxBody or an event past MaxEventSize;
//     404 when no route takes the event's type; 405 for a method other than POST;
//   - 429 with Retry-After when the route is full and its overload policy is Reject or
//     Shed; 503 while the runtime is not running (starting, draining, stopped);
//   - for a Call whose handler failed: 504 for a timeout, else 500, with the error
//     envelope's code.
//
// A failed request's body is a JSON array of Result, one per event up to the first that
// failed (a batch's earlier events were accepted and stay so). The request's context is
// the events' submit context. Safe for concurrent use.
func Handler(rt *tandem.Runtime, o Options) http.Handler {
	if o.MaxBody <= 0 {
		o.MaxBody = 4 << 20
	}
	if o.ReplyContentType == "" {
		o.ReplyContentType = "application/octet-stream"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			fail(w, []Result{{Status: http.StatusMethodNotAllowed, Error: "only POST carries events"}})
			return
		}
		req.Body = http.MaxBytesReader(w, req.Body, o.MaxBody)
		events, batch, err := ReadRequest(req)
		if err != nil {
			fail(w, []Result{{Status: statusOf(err), Error: err.Error()}})
			return
		}
		if o.Reply {
			if batch {
				fail(w, []Result{{Status: http.StatusBadRequest, Error: "a batch carries no replies: send one event per request"}})
				return
			}
			call(req.Context(), w, rt, events[0], o)
			return
		}
		results := make([]Result, 0, len(events))
		for _, ev := range events {
			if _, err := rt.Submit(req.Context(), ev); err != nil {
				fail(w, append(results, Result{ID: ev.ID, Status: statusOf(err), Error: err.Error()}))
				return
			}
			results = append(results, Result{ID: ev.ID, Status: http.StatusAccepted})
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

func call(ctx context.Context, w http.ResponseWriter, rt *tandem.Runtime, ev *envelope.Event, o Options) {
	reply, err := rt.Call(ctx, ev)
	if err != nil {
		r := Result{ID: ev.ID, Status: statusOf(err), Error: err.Error()}
		if he, ok := errors.AsType[*tandem.HandlerError](err); ok {
			r.Code = he.Code()
		}
		fail(w, []Result{r})
		return
	}
	defer reply.Release()
	w.Header().Set("Content-Type", o.ReplyContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply.Data())
}

// statusOf maps an error of reading, submitting or calling to its HTTP status.
func statusOf(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig), errors.Is(err, tandem.ErrEventTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrConversion), errors.Is(err, envelope.ErrInvalidEvent):
		return http.StatusBadRequest
	case errors.Is(err, tandem.ErrNoRoute):
		return http.StatusNotFound
	case errors.Is(err, tandem.ErrOverloaded):
		return http.StatusTooManyRequests
	case errors.Is(err, tandem.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	if he, ok := errors.AsType[*tandem.HandlerError](err); ok && he.Code() == envelope.CodeTimeout {
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// fail answers with the last result's status and every result as JSON.
func fail(w http.ResponseWriter, results []Result) {
	status := results[len(results)-1].Status
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(results)
}
