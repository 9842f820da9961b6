// Package fielderr is Sluice's one shape for "field X is bad": the path of
// the field, its value and what is wrong with it, optionally matching a
// package's sentinel error. The configuration, the agent, the announcer,
// the health checks and the tunnel encoder report their validation errors
// with it, and the control server turns any of them into the admin API's
// problems ({path, value, reason}).
//
// It imports only the standard library, so datapath packages may use it.
package fielderr

import "fmt"

// Error is one bad field.
type Error struct {
	// Path names the field, e.g. "vips[2].backends[0].weight" or
	// "tunnel.Dst".
	Path string
	// Value is the field's value as given; nil when the field is missing.
	Value any
	// Reason says what is wrong, read after the value: "must be >= 0",
	// "is not an interface name".
	Reason string
	// Err, when set, is the sentinel the error matches (errors.Is), such as
	// encap.ErrTunnel.
	Err error
}

// New returns the error of field path with value value.
func New(path string, value any, reason string) *Error {
	return &Error{Path: path, Value: value, Reason: reason}
}

// Error is "path: value reason", or "path: reason" without a value.
func (e *Error) Error() string {
	if e.Value == nil {
		return e.Path + ": " + e.Reason
	}
	return fmt.Sprintf("%s: %v %s", e.Path, e.Value, e.Reason)
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// All returns every *Error in err's tree (errors.Join, wrapping, lists
// with Unwrap() []error), in order.
func All(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

var _ error = (*Error)(nil)
