package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicelb/sluice/internal/scenario"
)

// HTTP over the IPv4 and the IPv6 VIP, through AF_PACKET and AF_XDP: every
// request is answered (curl fails otherwise), by all three backends, and the
// LB counts what it forwarded per backend.
func TestE2EHTTP(t *testing.T) {
	for _, io := range ioModes {
		t.Run(io, func(t *testing.T) {
			s := start(t, scenario.Options{IO: io})
			ctx := context.Background()
			const n = 150
			for _, vip := range s.VIPs() {
				names, err := s.Curl(ctx, vip, n)
				if err != nil {
					t.Fatal(err)
				}
				count := map[string]int{}
				for _, name := range names {
					count[name]++
				}
				t.Logf("%s: %v", vip, count)
				for _, be := range []string{"be1", "be2", "be3"} {
					if count[be] == 0 {
						t.Errorf("%s: backend %s served none of %d requests: %v", vip, be, n, count)
					}
				}
			}
			rep := lbReport(s)
			if !regexp.MustCompile(`io="?` + io).MatchString(rep) {
				t.Errorf("the LB did not run with io %s:\n%s", io, rep)
			}
			if strings.Contains(rep, "UNRESOLVED") || !strings.Contains(rep, "tx errors 0") {
				t.Errorf("LB report:\n%s", rep)
			}
		})
	}
}
