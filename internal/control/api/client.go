package api

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sluicelb/sluice/internal/config"
	"github.com/sluicelb/sluice/internal/control"
)

// ErrUnauthorized matches a 401 answer: a missing or wrong token.
var ErrUnauthorized = errors.New("unauthorized")

// Client talks to the admin API.
type Client struct {
	Base  string       // "http://127.0.0.1:6090"
	Token string       // sent as a bearer token when not empty
	HTTP  *http.Client // nil: http.DefaultClient
	// Hint is added to an UnreachableError: how the caller's user points
	// the client at another address.
	Hint string
}

// UnreachableError is a request that got no HTTP answer at all: nothing
// listens at the address, the connection failed or the answer timed out.
type UnreachableError struct {
	Addr string // the host:port tried
	Err  error
	Hint string // Client.Hint
}

func (e *UnreachableError) Error() string {
	s := fmt.Sprintf("no answer from the admin API at %s: %v", e.Addr, e.Err)
	if e.Hint != "" {
		s += "\n" + e.Hint
	}
	return s
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Error is an error answer. It matches control.ErrInvalidConfig (400),
// control.ErrNeedsRestart (409) and ErrUnauthorized (401).
type Error struct {
	Status int
	ErrorBody
}

func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return fmt.Sprintf("%s (HTTP %d)", e.ErrorBody.Error, e.Status)
	}
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.String()
	}
	return e.ErrorBody.Error + ": " + strings.Join(s, "; ")
}

// Is maps the status (and for 409 the code) to the domain's sentinel
// errors.
func (e *Error) Is(target error) bool {
	switch e.Status {
	case http.StatusBadRequest:
		if e.Code == CodeInvalidQuery {
			return target == control.ErrInvalidQuery
		}
		return target == control.ErrInvalidConfig
	case http.StatusConflict:
		if e.Code == CodeExists {
			return target == control.ErrExists
		}
		return target == control.ErrNeedsRestart
	case http.StatusNotFound:
		return target == control.ErrNotFound && e.Code == CodeNotFound
	case http.StatusUnauthorized:
		return target == ErrUnauthorized
	}
	return false
}

// Config returns the running configuration (YAML).
func (c *Client) Config(ctx context.Context) ([]byte, error) {
	return c.do(ctx, http.MethodGet, "/v1/config", nil, nil)
}

// Apply sends a YAML document to apply.
func (c *Client) Apply(ctx context.Context, doc []byte) (res control.ApplyResult, err error) {
	_, err = c.do(ctx, http.MethodPut, "/v1/config", doc, &res)
	return res, err
}

// VIPs lists the running VIPs with their backends.
func (c *Client) VIPs(ctx context.Context) (v []control.VIPStatus, err error) {
	_, err = c.do(ctx, http.MethodGet, "/v1/vips", nil, &v)
	return v, err
}

// Stats returns the node's counters.
func (c *Client) Stats(ctx context.Context) (s control.Stats, err error) {
	_, err = c.do(ctx, http.MethodGet, "/v1/stats", nil, &s)
	return s, err
}

// AddVIP adds a VIP (as in the configuration; defaults filled in).
func (c *Client) AddVIP(ctx context.Context, v config.VIP) (res control.ApplyResult, err error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return res, err
	}
	_, err = c.do(ctx, http.MethodPost, "/v1/vips", b, &res)
	return res, err
}

// RemoveVIP removes the VIP name.
func (c *Client) RemoveVIP(ctx context.Context, name string) (res control.ApplyResult, err error) {
	_, err = c.do(ctx, http.MethodDelete, "/v1/vips/"+url.PathEscape(name), nil, &res)
	return res, err
}

// AddBackend adds backend addr with weight to the VIP vip.
func (c *Client) AddBackend(ctx context.Context, vip, addr string, weight int) (res control.ApplyResult, err error) {
	b, _ := json.Marshal(BackendBody{Address: addr, Weight: &weight})
	_, err = c.do(ctx, http.MethodPost, "/v1/vips/"+url.PathEscape(vip)+"/backends", b, &res)
	return res, err
}

// RemoveBackend removes backend addr from the VIP vip.
func (c *Client) RemoveBackend(ctx context.Context, vip, addr string) (res control.ApplyResult, err error) {
	_, err = c.do(ctx, http.MethodDelete, backendPath(vip, addr), nil, &res)
	return res, err
}

// SetWeight sets the weight of backend addr of the VIP vip (0 drains it).
func (c *Client) SetWeight(ctx context.Context, vip, addr string, weight int) (res control.ApplyResult, err error) {
	b, _ := json.Marshal(WeightBody{Weight: &weight})
	_, err = c.do(ctx, http.MethodPut, backendPath(vip, addr)+"/weight", b, &res)
	return res, err
}

// SetState sets the state of backend addr of the VIP vip: active or
// draining.
func (c *Client) SetState(ctx context.Context, vip, addr, state string) (res control.ApplyResult, err error) {
	b, _ := json.Marshal(StateBody{State: state})
	_, err = c.do(ctx, http.MethodPut, backendPath(vip, addr)+"/state", b, &res)
	return res, err
}

// Node returns the node's service state (drain, announcements, peers).
func (c *Client) Node(ctx context.Context) (st control.NodeStatus, err error) {
	_, err = c.do(ctx, http.MethodGet, "/v1/node", nil, &st)
	return st, err
}

// Cluster returns the node's cluster state (Enabled false: it runs alone).
func (c *Client) Cluster(ctx context.Context) (st control.ClusterStatus, err error) {
	_, err = c.do(ctx, http.MethodGet, "/v1/cluster", nil, &st)
	return st, err
}

// L2 returns the node's L2 state (Enabled false: no node.l2).
func (c *Client) L2(ctx context.Context) (st control.L2Status, err error) {
	_, err = c.do(ctx, http.MethodGet, "/v1/l2", nil, &st)
	return st, err
}

// Fastpath returns the node's fastpath state with at most max redirects (0:
// all; Enabled false: no node.fastpath).
func (c *Client) Fastpath(ctx context.Context, max int) (st control.FastpathStatus, err error) {
	_, err = c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/fastpath?max=%d", max), nil, &st)
	return st, err
}

// DrainNode drains the node (true) or returns it to service (false).
func (c *Client) DrainNode(ctx context.Context, drain bool) (st control.NodeStatus, err error) {
	m := http.MethodPut
	if !drain {
		m = http.MethodDelete
	}
	_, err = c.do(ctx, m, "/v1/node/drain", nil, &st)
	return st, err
}

// LookupFlow says where the next packet of fq's flow goes and why.
func (c *Client) LookupFlow(ctx context.Context, fq control.FlowQuery) (l control.FlowLookup, err error) {
	q := url.Values{"vip": {fq.VIP}, "src": {fq.Src.Addr().String()}, "sport": {strconv.Itoa(int(fq.Src.Port()))}}
	if fq.DstPort != 0 {
		q.Set("dport", strconv.Itoa(int(fq.DstPort)))
	}
	if fq.SYN {
		q.Set("syn", "1")
	}
	if fq.Payload != nil {
		q.Set("payload", hex.EncodeToString(fq.Payload))
	}
	_, err = c.do(ctx, http.MethodGet, "/v1/flows/lookup?"+q.Encode(), nil, &l)
	return l, err
}

// TraceFlow runs a hypothetical packet through the live stages.
func (c *Client) TraceFlow(ctx context.Context, tq control.TraceQuery) (tr control.FlowTrace, err error) {
	q := url.Values{"proto": {tq.Proto}, "src": {tq.Src.String()}, "dst": {tq.Dst.String()}}
	if tq.TCPFlags != "" {
		q.Set("flags", tq.TCPFlags)
	}
	if tq.Tenant != "" {
		q.Set("tenant", tq.Tenant)
	}
	_, err = c.do(ctx, http.MethodGet, "/v1/flows/trace?"+q.Encode(), nil, &tr)
	return tr, err
}

// Capture streams the node's capture of the packets q selects to w
// (pcapng) and returns what the node reported at its end.
func (c *Client) Capture(ctx context.Context, q control.CaptureQuery, w io.Writer) (res control.CaptureResult, err error) {
	v := url.Values{}
	for k, s := range map[string]string{"proto": q.Proto, "host": q.Host, "vip": q.VIP, "tenant": q.Tenant, "where": q.Where} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Port != 0 {
		v.Set("port", strconv.Itoa(q.Port))
	}
	if q.Count != 0 {
		v.Set("count", strconv.Itoa(q.Count))
	}
	if q.Duration != 0 {
		v.Set("duration", q.Duration.String())
	}
	resp, err := c.stream(ctx, "/v1/capture?"+v.Encode())
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return res, err
	}
	res.Packets, _ = strconv.ParseUint(resp.Trailer.Get(TrailerCapturePackets), 10, 64)
	res.Dropped, _ = strconv.ParseUint(resp.Trailer.Get(TrailerCaptureDropped), 10, 64)
	return res, nil
}

// DecodeQUICCID decodes a connection ID (hex) with the QUIC-LB
// configuration of the VIP vip and names the backend it routes to.
func (c *Client) DecodeQUICCID(ctx context.Context, vip, cid string) (d control.CIDDecode, err error) {
	q := url.Values{"vip": {vip}, "cid": {cid}}
	_, err = c.do(ctx, http.MethodGet, "/v1/quic/decode?"+q.Encode(), nil, &d)
	return d, err
}

func backendPath(vip, addr string) string {
	return "/v1/vips/" + url.PathEscape(vip) + "/backends/" + url.PathEscape(addr)
}

// do sends a request and decodes a JSON answer into out, or returns the raw
// body when out is nil.
// stream sends a GET of path and returns the answer to be read as it
// comes; an error answer is read and returned as an *Error.
func (c *Client) stream(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, errorAnswer(resp.StatusCode, b)
	}
	return resp, nil
}

// send sends req with the token, and names the node it cannot reach.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, err // the caller gave up
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the method and URL: the address says it
		}
		return nil, &UnreachableError{Addr: req.URL.Host, Err: err, Hint: c.Hint}
	}
	return resp, nil
}

// errorAnswer is the *Error of an answer with status and body b.
func errorAnswer(status int, b []byte) *Error {
	e := &Error{Status: status}
	if json.Unmarshal(b, &e.ErrorBody) != nil || e.ErrorBody.Error == "" {
		e.ErrorBody.Error = strings.TrimSpace(string(b))
	}
	return e
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorAnswer(resp.StatusCode, b)
	}
	if out == nil {
		return b, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return b, nil
}
