package agent

import (
	"fmt"
	"os"

	"github.com/sluicelb/sluice/internal/tuntap"
)

// openTUN creates the agent's TUN device name (tuntap.Open).
func openTUN(name string) (*os.File, error) {
	f, err := tuntap.Open(name, false)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return f, nil
}
