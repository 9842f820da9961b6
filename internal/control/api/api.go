// Package api adapts a control.Server to HTTP/JSON and Prometheus:
//
//	GET /v1/config   the running configuration (YAML)
//	PUT /v1/config   apply a YAML document: 200 with the ApplyResult,
//	                 400 with {"error", "errors": [{path, value, reason}]},
//	                 409 {"error"} for a change only a restart can make,
//	                 500 {"error"} when the node refuses it otherwise
//	GET /v1/vips     []control.VIPStatus
//
// Edits of the running configuration, applied like PUT /v1/config (200
// with the ApplyResult, 400/409/500 likewise), and 404 {"error", "code":
// "not_found"} for an unknown VIP or backend, 409 {"error", "code":
// "exists"} for one that already is:
//
//	POST   /v1/vips                                 add a VIP (body: a VIP as in the configuration, YAML or JSON)
//	DELETE /v1/vips/{name}                          remove a VIP
//	POST   /v1/vips/{name}/backends                 add a backend: {"address", "weight"} (weight default 1)
//	DELETE /v1/vips/{name}/backends/{addr}          remove a backend
//	PUT    /v1/vips/{name}/backends/{addr}/weight   {"weight"}: 0 drains
//
//	GET /v1/flows/lookup?vip=NAME&src=IP&sport=N[&dport=N][&syn=1][&payload=HEX]
//	                 control.FlowLookup: where the flow's next packet goes
//	                 and why; 404 unknown VIP, 400 {"code": "invalid_query"}
//
//	GET /v1/flows/trace?proto=tcp|udp&src=IP:PORT&dst=IP:PORT[&flags=syn|ack|fin|rst][&tenant=T]
//	                 control.FlowTrace: a hypothetical packet through the
//	                 live stages, each stage's input and decision; 400
//	                 {"code": "invalid_query"}
//
//	GET /v1/capture?[proto=tcp|udp|icmp][&host=IP|PREFIX][&port=N][&vip=NAME][&tenant=T]
//	                 [&where=ingress|egress|both][&count=N][&duration=D]
//	                 pcapng (application/x-pcapng), streamed as the packets
//	                 come, then trailers Sluice-Capture-Packets and
//	                 Sluice-Capture-Dropped; 400 {"code": "invalid_query"},
//	                 404 unknown VIP, 409 a capture already runs
//
//	GET /v1/stats    control.Stats
//	GET /metrics     Prometheus text format
//
// It decides nothing: each route is a forward to the server. Listen serves
// a handler on loopback freely and elsewhere only behind a bearer token.
// Client is the Go client `sluice ctl` uses.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
)

// MaxConfigBytes bounds a PUT /v1/config body.
const MaxConfigBytes = 4 << 20

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error    string            `json:"error"`
	Code     string            `json:"code,omitempty"`   // one of the Code constants, when one applies
	Problems []control.Problem `json:"errors,omitempty"` // 400: every problem of the document
}

// Error codes: which domain error an answer is.
const (
	CodeInvalid      = "invalid"       // 400, control.ErrInvalidConfig
	CodeNeedsRestart = "needs_restart" // 409, control.ErrNeedsRestart
	CodeNotFound     = "not_found"     // 404, control.ErrNotFound
	CodeExists       = "exists"        // 409, control.ErrExists
	CodeInvalidQuery = "invalid_query" // 400, control.ErrInvalidQuery
)

// BackendBody is the body of POST /v1/vips/{name}/backends.
type BackendBody struct {
	Address string `json:"address"`
	Weight  *int   `json:"weight,omitempty"` // default 1
}

// WeightBody is the body of PUT /v1/vips/{name}/backends/{addr}/weight.
type WeightBody struct {
	Weight *int `json:"weight"`
}

// StateBody is the body of PUT /v1/vips/{name}/backends/{addr}/state.
type StateBody struct {
	State string `json:"state"` // active or draining
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
	// edit answers an edit verb's result.
	edit := func(w http.ResponseWriter, res control.ApplyResult, err error) {
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
	mux.HandleFunc("POST /v1/vips", func(w http.ResponseWriter, r *http.Request) {
		var v config.VIP
		if err := decodeBody(w, r, &v, true); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		res, err := s.AddVIP(r.Context(), v)
		edit(w, res, err)
	})
	mux.HandleFunc("DELETE /v1/vips/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.RemoveVIP(r.Context(), r.PathValue("name"))
		edit(w, res, err)
	})
	mux.HandleFunc("POST /v1/vips/{name}/backends", func(w http.ResponseWriter, r *http.Request) {
		var b BackendBody
		if err := decodeBody(w, r, &b, false); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		weight := 1
		if b.Weight != nil {
			weight = *b.Weight
		}
		res, err := s.AddBackend(r.Context(), r.PathValue("name"), b.Address, weight)
		edit(w, res, err)
	})
	mux.HandleFunc("DELETE /v1/vips/{name}/backends/{addr}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.RemoveBackend(r.Context(), r.PathValue("name"), r.PathValue("addr"))
		edit(w, res, err)
	})
	mux.HandleFunc("PUT /v1/vips/{name}/backends/{addr}/weight", func(w http.ResponseWriter, r *http.Request) {
		var b WeightBody
		if err := decodeBody(w, r, &b, false); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if b.Weight == nil {
			writeError(w, http.StatusBadRequest, errors.New(`weight: the body must be {"weight": N}`))
			return
		}
		res, err := s.SetWeight(r.Context(), r.PathValue("name"), r.PathValue("addr"), *b.Weight)
		edit(w, res, err)
	})
	mux.HandleFunc("PUT /v1/vips/{name}/backends/{addr}/state", func(w http.ResponseWriter, r *http.Request) {
		var b StateBody
		if err := decodeBody(w, r, &b, false); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if b.State == "" {
			writeError(w, http.StatusBadRequest, errors.New(`state: the body must be {"state": "active" | "draining"}`))
			return
		}
		res, err := s.SetState(r.Context(), r.PathValue("name"), r.PathValue("addr"), b.State)
		edit(w, res, err)
	})
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.NodeStatus()) })
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.ClusterStatus()) })
	mux.HandleFunc("GET /v1/l2", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.L2Status()) })
	mux.HandleFunc("GET /v1/fastpath", func(w http.ResponseWriter, r *http.Request) {
		max := 1000
		if v := r.URL.Query().Get("max"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("max: %q is not a count (0: all)", v))
				return
			}
			max = n
		}
		writeJSON(w, http.StatusOK, s.Fastpath(r.Context(), max))
	})
	drain := func(d bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			st, err := s.DrainNode(d)
			if err != nil {
				writeError(w, statusOf(err), err)
				return
			}
			writeJSON(w, http.StatusOK, st)
		}
	}
	mux.HandleFunc("PUT /v1/node/drain", drain(true))
	mux.HandleFunc("DELETE /v1/node/drain", drain(false))
	mux.HandleFunc("GET /v1/flows/lookup", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		src, err := netip.ParseAddr(q.Get("src"))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("%w: src %q is not an IP address", control.ErrInvalidQuery, q.Get("src")))
			return
		}
		var ports [2]uint16
		for i, name := range []string{"sport", "dport"} {
			v := q.Get(name)
			if v == "" && name == "dport" {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("%w: %s %q is not a port", control.ErrInvalidQuery, name, v))
				return
			}
			ports[i] = uint16(n)
		}
		fq := control.FlowQuery{VIP: q.Get("vip"), Src: netip.AddrPortFrom(src.Unmap(), ports[0]), DstPort: ports[1]}
		switch v := q.Get("syn"); v {
		case "", "0", "false":
		case "1", "true":
			fq.SYN = true
		default:
			writeError(w, http.StatusBadRequest, fmt.Errorf("%w: syn %q is not a boolean", control.ErrInvalidQuery, v))
			return
		}
		if v := q.Get("payload"); v != "" {
			if fq.Payload, err = hex.DecodeString(v); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("%w: payload %q is not hex octets", control.ErrInvalidQuery, v))
				return
			}
		}
		l, err := s.LookupFlow(fq)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("GET /v1/flows/trace", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		tq := control.TraceQuery{Tenant: q.Get("tenant"), Proto: q.Get("proto"), TCPFlags: q.Get("flags")}
		for _, f := range []struct {
			name string
			ap   *netip.AddrPort
		}{{"src", &tq.Src}, {"dst", &tq.Dst}} {
			ap, err := netip.ParseAddrPort(q.Get(f.name))
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("%w: %s %q is not IP:port", control.ErrInvalidQuery, f.name, q.Get(f.name)))
				return
			}
			*f.ap = ap
		}
		tr, err := s.TraceFlow(tq)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, tr)
	})
	mux.Handle("GET /v1/capture", CaptureHandler(s.Capture))
	mux.HandleFunc("GET /v1/quic/decode", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		cid, err := control.ParseCID(q.Get("cid"))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("%w: %w", control.ErrInvalidQuery, err))
			return
		}
		d, err := s.DecodeQUICCID(q.Get("vip"), cid)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Stats()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// decodeBody decodes a request body of at most MaxConfigBytes into v:
// strictly as YAML (which JSON is) with asYAML, else strictly as JSON.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, asYAML bool) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxConfigBytes))
	if err != nil {
		return err
	}
	if asYAML {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("body: %w", err)
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}

// CaptureHandler serves GET /v1/capture with capture (the LB node's
// control.Server.Capture, or the backend agent's): the query's filter, a
// pcapng stream, then the trailers; an error before the first byte is a
// JSON error answer.
func CaptureHandler(capture func(ctx context.Context, q control.CaptureQuery, w io.Writer) (control.CaptureResult, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := captureQuery(r.URL.Query())
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		cw := &streamWriter{w: w, contentType: "application/x-pcapng", trailers: []string{TrailerCapturePackets, TrailerCaptureDropped}}
		res, err := capture(r.Context(), q, cw)
		if !cw.started {
			if err == nil {
				err = errors.New("capture wrote nothing")
			}
			writeError(w, statusOf(err), err)
			return
		}
		w.Header().Set(TrailerCapturePackets, strconv.FormatUint(res.Packets, 10))
		w.Header().Set(TrailerCaptureDropped, strconv.FormatUint(res.Dropped, 10))
	})
}

// Trailers of GET /v1/capture: packets written, copies the datapath lost.
const (
	TrailerCapturePackets = "Sluice-Capture-Packets"
	TrailerCaptureDropped = "Sluice-Capture-Dropped"
)

// captureQuery reads a GET /v1/capture query.
func captureQuery(v url.Values) (control.CaptureQuery, error) {
	q := control.CaptureQuery{Proto: v.Get("proto"), Host: v.Get("host"), VIP: v.Get("vip"), Tenant: v.Get("tenant"), Where: v.Get("where")}
	for _, f := range []struct {
		name string
		n    *int
	}{{"port", &q.Port}, {"count", &q.Count}} {
		if s := v.Get(f.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				return q, fmt.Errorf("%w: %s %q is not a number", control.ErrInvalidQuery, f.name, s)
			}
			*f.n = n
		}
	}
	if s := v.Get("duration"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return q, fmt.Errorf("%w: duration %q: %v", control.ErrInvalidQuery, s, err)
		}
		q.Duration = d
	}
	return q, nil
}

// streamWriter sends a streamed answer: the status and headers at the
// first write, then each write at once (http.Flusher).
type streamWriter struct {
	w           http.ResponseWriter
	contentType string
	trailers    []string
	started     bool
}

func (s *streamWriter) Write(b []byte) (int, error) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", s.contentType)
		s.w.Header().Set("Trailer", strings.Join(s.trailers, ", "))
		s.w.WriteHeader(http.StatusOK)
	}
	n, err := s.w.Write(b)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
	return n, err
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, control.ErrCaptureRunning):
		return http.StatusConflict
	case errors.Is(err, control.ErrCaptureUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, control.ErrInvalidConfig), errors.Is(err, control.ErrInvalidQuery):
		return http.StatusBadRequest
	case errors.Is(err, control.ErrNeedsRestart), errors.Is(err, control.ErrExists):
		return http.StatusConflict
	case errors.Is(err, control.ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

func codeOf(err error) string {
	switch {
	case errors.Is(err, control.ErrInvalidConfig):
		return CodeInvalid
	case errors.Is(err, control.ErrNeedsRestart):
		return CodeNeedsRestart
	case errors.Is(err, control.ErrExists):
		return CodeExists
	case errors.Is(err, control.ErrInvalidQuery):
		return CodeInvalidQuery
	case errors.Is(err, control.ErrNotFound):
		return CodeNotFound
	}
	return ""
}

func writeError(w http.ResponseWriter, code int, err error) {
	body := ErrorBody{Error: err.Error(), Code: codeOf(err)}
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
