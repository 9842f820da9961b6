package quiclb_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/sluicelb/sluice/internal/quiclb"
)

func Example() {
	key, _ := hex.DecodeString("8f95f09245765f80256934e50c66207f")
	codec, err := quiclb.New(quiclb.Config{
		Rotation:       2,
		ServerIDLen:    2,
		NonceLen:       6,
		Key:            key,
		LenSelfEncoded: true,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(codec.Mode(), codec.CIDLen())

	// A server issues CIDs carrying its server ID and a fresh nonce.
	serverID, _ := quiclb.ServerIDFromUint64(0x0a01, 2)
	nonce := make([]byte, codec.NonceLen())
	rand.Read(nonce)
	cid, err := codec.Encode(nil, serverID.Bytes(), nonce)
	if err != nil {
		panic(err)
	}

	// The load balancer reads it back from a packet's destination CID.
	got, err := codec.DecodeServerID(cid)
	fmt.Println(quiclb.Rotation(cid), got, got == serverID, err)

	// A client's random Initial DCID is usually unroutable.
	_, err = codec.DecodeServerID([]byte{0xe3, 1, 2, 3, 4, 5, 6, 7})
	fmt.Println(err == quiclb.ErrUnroutable)
	// Output:
	// four-pass 9
	// 2 0a01 true <nil>
	// true
}

func ExampleConfig_Validate() {
	err := quiclb.Config{ServerIDLen: 15, NonceLen: 5}.Validate()
	fmt.Println(err)
	// Output: quiclb: server_id_len+nonce_len = 20: server ID and nonce lengths must sum to at most 19
}
