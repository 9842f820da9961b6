// Package api adapts a control.Server to HTTP/JSON and Prometheus:
//
//	GET /v1/config   the running configuration (YAML)
//	PUT /v1/config   apply a YAML document: 200 with the ApplyResult,
//	                 400 with {"error", "errors": [{path, value, reason}]},
//	                 409 {"error"} for a change only a restart can make,
//	                 500 {"error"} when the node refuses it otherwise
//	GET /v1/vips     []control.VIPStatus
//	GET /v1/stats    control.Stats
//	GET /metrics     Prometheus text format
//
// It decides nothing: each route is a forward to the server. Listen serves
// a handler on loopback freely and elsewhere only behind a bearer token.
// Client is the Go client `sluice ctl` uses.
package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelb/sluice/internal/control"
)

// MaxConfigBytes bounds a PUT /v1/config body.
const MaxConfigBytes = 4 << 20

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error    string            `json:"error"`
	Problems []control.Problem `json:"errors,omitempty"` // 400: every problem of the document
}

// Handler returns the HTTP handler of s, /metrics included.
func Handler(s *control.Server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) {
		b, err := s.GetConfig()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(b)
	})
	mux.HandleFunc("PUT /v1/config", func(w http.ResponseWriter, r *http.Request) {
		doc, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxConfigBytes))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, err)
			return
		}
		res, err := s.PutConfig(r.Context(), doc)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/vips", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.ListVIPs()) })
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Stats()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, control.ErrInvalidConfig):
		return http.StatusBadRequest
	case errors.Is(err, control.ErrNeedsRestart):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, code int, err error) {
	body := ErrorBody{Error: err.Error()}
	var ce *control.ConfigError
	if errors.As(err, &ce) {
		body.Error = control.ErrInvalidConfig.Error()
		body.Problems = ce.Problems
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ErrTokenRequired is Listen's refusal to serve a non-loopback address
// without a token.
var ErrTokenRequired = errors.New("a bearer token is required to listen on a non-loopback address")

// Listen serves h on addr (host:port) until the returned server is shut
// down; the server's Addr is the address actually bound (port 0 picks one).
// On a loopback address the token is optional; elsewhere it is required
// (ErrTokenRequired). With a token, every request must carry
// "Authorization: Bearer <token>" or is answered 401.
func Listen(addr, token string, h http.Handler) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); token == "" && (!ok || !a.IP.IsLoopback()) {
		ln.Close()
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: ln.Addr(), Err: ErrTokenRequired}
	}
	if token != "" {
		h = RequireToken(token, h)
	}
	srv := &http.Server{Addr: ln.Addr().String(), Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// RequireToken answers 401 to every request without
// "Authorization: Bearer <token>", comparing in constant time.
func RequireToken(token string, h http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeJSON(w, http.StatusUnauthorized, ErrorBody{Error: "missing or wrong bearer token"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
