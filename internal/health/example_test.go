package health_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/sluicelb/sluice/internal/health"
)

func Example() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()

	up := make(chan health.Transition, 1)
	c := health.NewChecker(func(tr health.Transition) { up <- tr }) // called on the check's goroutine
	c.Set("web/backend-1", health.Spec{
		Kind:     health.TCP,
		Target:   l.Addr().(*net.TCPAddr).AddrPort(),
		Interval: 100 * time.Millisecond,
		Rise:     2,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()

	tr := <-up
	fmt.Println(tr.Key, tr.From, "->", tr.To)
	cancel()
	<-done
	// Output: web/backend-1 unknown -> up
}
