package egress

import (
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func TestLoad(t *testing.T) {
	p := loadT(t)
	f := l4Frame(unix.IPPROTO_UDP, client4, vip4, 1000, 53, 0, 0, []byte("x"))
	if err := p.Put(flowOf(unix.IPPROTO_UDP, client4, vip4, 1000, 53), Target{Backend: back4, SrcPort: 50000}); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(f)+256)
	ret, err := p.objs.SluiceEgress.Run(&ebpf.RunOptions{Data: f, DataOut: out})
	t.Logf("ret %d err %v out %x", ret, err, out[:len(f)+32])
	c, _ := p.Counters()
	t.Logf("%+v", c)
}
