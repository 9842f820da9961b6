package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sluicelb/sluice/internal/quiclb"
)

// The echo server answers each line with its name and the client's
// address as it sees it, which follows the client through a migration.
func TestServeQUIC(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	codec, err := quiclb.New(quiclb.Config{Rotation: 2, ServerIDLen: 2, NonceLen: 6})
	if err != nil {
		t.Fatal(err)
	}
	sid, _ := quiclb.ServerIDFromUint64(0x0a07, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- ServeQUIC(sctx, QUICServer{Addrs: []string{addr}, Name: "be7", Codec: codec, ServerID: sid})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	udp := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1 := udp()
	tr1 := &quic.Transport{Conn: c1}
	defer tr1.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	var conn *quic.Conn
	for { // the server may not listen yet
		dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		conn, err = tr1.Dial(dctx, raddr, QUICClientTLS(), nil)
		dcancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(str)
	exchange := func(line string, want net.Addr) {
		t.Helper()
		fmt.Fprintf(str, "%s\n", line)
		reply, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		name, client, got, ok := ParseQUICEcho(reply)
		if !ok || name != "be7" || client != want.String() || got != line {
			t.Fatalf("reply %q to %q from %v", reply, line, want)
		}
	}
	exchange("hello", c1.LocalAddr())

	c2 := udp()
	tr2 := &quic.Transport{Conn: c2}
	defer tr2.Close()
	p, err := conn.AddPath(tr2)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Switch(); err != nil {
		t.Fatal(err)
	}
	exchange("after migrating", c2.LocalAddr())
}

func TestParseQUICEcho(t *testing.T) {
	name, client, line, ok := ParseQUICEcho("be1 198.18.10.2:4000 a b c\n")
	if !ok || name != "be1" || client != "198.18.10.2:4000" || line != "a b c" {
		t.Fatalf("%q %q %q %v", name, client, line, ok)
	}
	if _, _, _, ok := ParseQUICEcho("be1 only"); ok {
		t.Fatal("accepted a reply without a line")
	}
}
