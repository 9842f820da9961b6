package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every agent counter has its own, valid metric name.
func TestAgentCollectorDescs(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(agentCollector{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	ch := make(chan *prometheus.Desc, 256)
	agentCollector{}.Describe(ch)
	close(ch)
	for range ch {
		n++
	}
	if n < 10 {
		t.Fatalf("%d metrics", n)
	}
}
