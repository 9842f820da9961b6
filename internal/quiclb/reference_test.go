package quiclb

import (
	"crypto/aes"
	"math/big"
)

// refEncrypt is a slow, obviously-correct model of the encrypted modes to
// compare Codec with: the four-pass network is written over big integers
// of exactly 4*len(pt) bits per half, the way the draft describes it in
// bits, instead of the octet arrays and nibble masks the Codec uses. It
// returns the encrypted block (without the first octet).
func refEncrypt(key, pt []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	n := len(pt)
	if n == singlePassLen {
		out := make([]byte, n)
		block.Encrypt(out, pt)
		return out
	}
	halfBits := uint(4 * n)           // bits in each half
	halfLen := (n + 1) / 2            // octets that carry a half
	pad := uint(8*halfLen) - halfBits // 4 for odd n, else 0
	mask := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), halfBits), big.NewInt(1))

	x := new(big.Int).SetBytes(pt)
	left := new(big.Int).Rsh(x, halfBits)
	right := new(big.Int).And(x, mask)

	// f is the round function of draft §5.4.2: the half goes into the
	// expanded block left-aligned if it is the left half (its last nibble
	// zero when n is odd) and right-aligned if it is the right half (its
	// first nibble zero), and the first halfLen octets of AES's output are
	// kept.
	f := func(pass byte, half *big.Int, isLeft bool) *big.Int {
		v := new(big.Int).Set(half)
		if isLeft {
			v.Lsh(v, pad)
		}
		var in, out [16]byte
		v.FillBytes(in[:halfLen])
		in[14], in[15] = byte(n), pass
		block.Encrypt(out[:], in[:])
		return new(big.Int).SetBytes(out[:halfLen])
	}
	// Applied to the left half, the top halfBits bits of the round output
	// count; applied to the right half, the bottom ones.
	intoLeft := func(t *big.Int) { left.Xor(left, new(big.Int).Rsh(t, pad)) }
	intoRight := func(t *big.Int) { right.Xor(right, new(big.Int).And(t, mask)) }

	intoRight(f(1, left, true))
	intoLeft(f(2, right, false))
	intoRight(f(3, left, true))
	intoLeft(f(4, right, false))

	y := new(big.Int).Lsh(left, halfBits)
	y.Or(y, right)
	return y.FillBytes(make([]byte, n))
}
