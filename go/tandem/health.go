package tandem

import (
	"fmt"
	"net/http"
)

// HTTPHandler serves the runtime's health for operators: /healthz answers 200 while the
// runtime is neither Failed nor Stopped, /readyz answers 200 only while it is Running (503
// otherwise, with the state in the body), and /metrics is served by metrics when it is not nil
// (for example promhttp.Handler() over an OpenTelemetry Prometheus exporter). Safe for
// concurrent use.
func (r *Runtime) HTTPHandler(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := r.State()
		if st == Failed || st == Stopped {
			http.Error(w, st.String(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, st)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := r.State()
		if st != Running {
			http.Error(w, st.String(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, st)
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}
