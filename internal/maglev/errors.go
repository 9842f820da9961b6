package maglev

import (
	"errors"
	"fmt"
)

// Errors returned by Build. Test with errors.Is; a problem with one backend
// comes wrapped in a *BackendError that names it.
var (
	// ErrInvalidM: Options.M is not a prime in [2, MaxM], or is not larger
	// than the number of backends.
	ErrInvalidM = errors.New("invalid table size")
	// ErrTooManyBackends: more than MaxBackends backends, counting the
	// previous owners that Build has to keep referable.
	ErrTooManyBackends = errors.New("too many backends")
	// ErrEmptyName: a backend has an empty Name.
	ErrEmptyName = errors.New("empty name")
	// ErrDuplicateName: two backends share a Name.
	ErrDuplicateName = errors.New("duplicate name")
	// ErrPrevSize: the previous table has a different M, so its slots do
	// not correspond to the new table's. Pass prev = nil to start afresh.
	ErrPrevSize = errors.New("previous table has a different size")
)

// BackendError reports a bad entry of the backends argument of Build.
type BackendError struct {
	Index int    // position in the backends slice given to Build
	Name  string // its Name
	Err   error  // ErrEmptyName or ErrDuplicateName (possibly wrapped)
}

func (e *BackendError) Error() string {
	return fmt.Sprintf("maglev: backends[%d].name %q: %v", e.Index, e.Name, e.Err)
}

func (e *BackendError) Unwrap() error { return e.Err }
