package cloudevents_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/cloudevents"
	"github.com/tandemrt/tandem/go/tandem/envelope"
	"github.com/tandemrt/tandem/go/tandem/retry"
)

// ingress starts a runtime with a Go route that records what it receives, a Go route that
// fails, one that blocks, and the demo Rust handlers; and serves both ingress modes.
type ingress struct {
	rt             *tandem.Runtime
	submit, call   *httptest.Server
	got            chan *tandem.Event
	release        chan struct{}
	blockedStarted chan struct{}
}

func newIngress(t *testing.T) *ingress {
	t.Helper()
	in := &ingress{got: make(chan *tandem.Event, 16), release: make(chan struct{}), blockedStarted: make(chan struct{}, 4)}
	rt, err := tandem.New(tandem.Config{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(rt.Handle("test.record", "record", tandem.HandlerFunc(func(_ context.Context, ev *tandem.Event) tandem.Result {
		c := *ev
		in.got <- &c
		return tandem.AckReply([]byte("recorded " + ev.ID))
	})))
	must(rt.Handle("test.term", "term", tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result {
		return tandem.Term(tandem.Errorf("bad_order", "the order is malformed"))
	})))
	must(rt.Handle("test.slow", "slow", tandem.HandlerFunc(func(ctx context.Context, _ *tandem.Event) tandem.Result {
		<-ctx.Done()
		return tandem.Ack()
	}), tandem.WithTimeout(20*time.Millisecond), tandem.WithRetry(oneAttempt())))
	must(rt.Handle("test.block", "block", tandem.HandlerFunc(func(context.Context, *tandem.Event) tandem.Result {
		in.blockedStarted <- struct{}{}
		<-in.release
		return tandem.Ack()
	}), tandem.WithWorkers(1, 1), tandem.WithQueue(1), tandem.WithOverload(tandem.Reject)))
	must(rt.Start())
	in.rt = rt
	in.submit = httptest.NewServer(cloudevents.Handler(rt, cloudevents.Options{MaxBody: 64 << 10}))
	in.call = httptest.NewServer(cloudevents.Handler(rt, cloudevents.Options{Reply: true, ReplyContentType: "text/plain"}))
	t.Cleanup(func() {
		in.submit.Close()
		in.call.Close()
		select {
		case <-in.release:
		default:
			close(in.release)
		}
		_ = rt.Shutdown(context.Background())
	})
	return in
}

func oneAttempt() retry.Backoff { return retry.Backoff{MaxAttempts: 1} }

func post(t *testing.T, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func request(t *testing.T, url string, ev *tandem.Event, mode cloudevents.Mode) *http.Request {
	t.Helper()
	req, err := cloudevents.NewRequest(context.Background(), url, ev, mode)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Accepted events answer 202 and reach their handler with every attribute; a Call answers
// 200 with the reply of a Go or a Rust handler.
func TestIngressSubmitsAndCalls(t *testing.T) {
	in := newIngress(t)
	ev := &tandem.Event{ID: "1", Source: "/http", Type: "test.record", Subject: "s", CorrelationID: "c",
		Extensions: map[string]string{"tenant": "acme"}, DataContentType: "application/json", Data: []byte(`{"n": 1}`)}
	for _, mode := range []cloudevents.Mode{cloudevents.Binary, cloudevents.Structured} {
		if status, body, _ := post(t, request(t, in.submit.URL, ev, mode)); status != http.StatusAccepted {
			t.Fatalf("mode %v: %d %s, want 202", mode, status, body)
		}
		got := <-in.got
		if got.ID != "1" || got.Subject != "s" || got.CorrelationID != "c" || got.Extensions["tenant"] != "acme" || string(got.Data) != `{"n": 1}` {
			t.Fatalf("mode %v: the handler got %+v", mode, got)
		}
	}
	batch, err := cloudevents.NewBatchRequest(context.Background(), in.submit.URL, []*tandem.Event{
		{ID: "b1", Source: "/http", Type: "test.record"}, {ID: "b2", Source: "/http", Type: "test.record"}})
	if err != nil {
		t.Fatal(err)
	}
	if status, body, _ := post(t, batch); status != http.StatusAccepted {
		t.Fatalf("batch: %d %s", status, body)
	}
	if a, b := (<-in.got).ID, (<-in.got).ID; a+b != "b1b2" && a+b != "b2b1" {
		t.Fatalf("batch delivered %s and %s", a, b)
	}

	status, body, h := post(t, request(t, in.call.URL, &tandem.Event{ID: "2", Source: "/http", Type: "test.record"}, cloudevents.Binary))
	if status != http.StatusOK || body != "recorded 2" || h.Get("Content-Type") != "text/plain" {
		t.Fatalf("call a Go handler: %d %q %q", status, body, h.Get("Content-Type"))
	}
	<-in.got
	status, body, _ = post(t, request(t, in.call.URL, &tandem.Event{ID: "3", Source: "/http", Type: "demo.upper", Data: []byte("shout")}, cloudevents.Structured))
	if status != http.StatusOK || body != "SHOUT" {
		t.Fatalf("call a Rust handler: %d %q", status, body)
	}
}

// Each refusal answers its status, with the error as JSON: 400 for what is not an event,
// 404 without a route, 405 for GET, 413 past the size limits, 429 on overload with Reject,
// 500 and 504 for a handler's failure in a Call, 503 once the runtime is shutting down.
func TestIngressAnswersEachRefusalWithItsStatus(t *testing.T) {
	in := newIngress(t)
	raw := func(url, contentType, body string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		return req
	}
	expect := func(name string, req *http.Request, status int, code string) {
		t.Helper()
		got, body, h := post(t, req)
		if got != status {
			t.Fatalf("%s: %d %s, want %d", name, got, body, status)
		}
		var results []cloudevents.Result
		if err := json.Unmarshal([]byte(body), &results); err != nil || len(results) == 0 || results[len(results)-1].Error == "" {
			t.Fatalf("%s: body %q is not the JSON results with an error", name, body)
		}
		if results[len(results)-1].Code != code {
			t.Fatalf("%s: code %q, want %q", name, results[len(results)-1].Code, code)
		}
		if (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) && h.Get("Retry-After") == "" {
			t.Fatalf("%s: no Retry-After", name)
		}
	}
	expect("not an event", raw(in.submit.URL, "text/plain", "hello"), http.StatusBadRequest, "")
	expect("malformed JSON", raw(in.submit.URL, cloudevents.ContentTypeJSON, "{"), http.StatusBadRequest, "")
	expect("no id", raw(in.submit.URL, cloudevents.ContentTypeJSON, `{"specversion":"1.0","source":"/s","type":"test.record"}`), http.StatusBadRequest, "")
	expect("a batch of calls", raw(in.call.URL, cloudevents.ContentTypeBatch, `[]`), http.StatusBadRequest, "")
	expect("no route", request(t, in.submit.URL, &tandem.Event{ID: "1", Source: "/s", Type: "nobody.home"}, cloudevents.Binary), http.StatusNotFound, "")
	get, _ := http.NewRequest(http.MethodGet, in.submit.URL, nil)
	expect("GET", get, http.StatusMethodNotAllowed, "")
	expect("past MaxBody", request(t, in.submit.URL, &tandem.Event{ID: "1", Source: "/s", Type: "test.record", Data: make([]byte, 65<<10)}, cloudevents.Binary), http.StatusRequestEntityTooLarge, "")
	expect("past MaxEventSize", request(t, in.call.URL, &tandem.Event{ID: "1", Source: "/s", Type: "demo.echo", Data: make([]byte, 2<<20)}, cloudevents.Binary), http.StatusRequestEntityTooLarge, "")
	expect("a handler's Term", request(t, in.call.URL, &tandem.Event{ID: "1", Source: "/s", Type: "test.term"}, cloudevents.Binary), http.StatusInternalServerError, "bad_order")
	expect("a handler's timeout", request(t, in.call.URL, &tandem.Event{ID: "1", Source: "/s", Type: "test.slow"}, cloudevents.Binary), http.StatusGatewayTimeout, envelope.CodeTimeout)

	// One event runs, one waits in the queue: the third finds the route full.
	blocked := func(id string) *http.Request {
		return request(t, in.submit.URL, &tandem.Event{ID: id, Source: "/s", Type: "test.block"}, cloudevents.Binary)
	}
	if status, body, _ := post(t, blocked("1")); status != http.StatusAccepted {
		t.Fatalf("first blocking event: %d %s", status, body)
	}
	<-in.blockedStarted
	if status, body, _ := post(t, blocked("2")); status != http.StatusAccepted {
		t.Fatalf("second blocking event: %d %s", status, body)
	}
	expect("overload", blocked("3"), http.StatusTooManyRequests, "")
	close(in.release)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.rt.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	expect("after Shutdown", request(t, in.submit.URL, &tandem.Event{ID: "9", Source: "/s", Type: "test.record"}, cloudevents.Binary), http.StatusServiceUnavailable, "")
}
