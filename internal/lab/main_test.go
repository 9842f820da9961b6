package lab

import (
	"errors"
	"flag"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Tests that build a lab start with requireLab, which skips them
		// with -short; one that forgot fails here, before its first
		// namespace, instead of building a lab in the -short run.
		testHookStep = func(string) error {
			return errors.New("lab.Up with -short: call requireLab at the start of the test (it skips with -short)")
		}
	}
	os.Exit(m.Run())
}
