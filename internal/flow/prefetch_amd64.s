//go:build amd64 && !purego

#include "textflag.h"

// func prefetchHomes(base *Entry, nslots uint64, hashes []uint64) uint32
//
// For each hash: home = (hash>>32) * nslots >> 32, as Table.home computes it;
// prefetch the four cache lines from &base[home] on (52 is EntrySize, which
// table.go pins at compile time). A prefetch never faults, so lines past the
// end of the slot array are harmless.
TEXT ·prefetchHomes(SB), NOSPLIT, $0-44
	MOVQ base+0(FP), DI
	MOVQ nslots+8(FP), R8
	MOVQ hashes_base+16(FP), SI
	MOVQ hashes_len+24(FP), CX
	TESTQ CX, CX
	JEQ done

loop:
	MOVQ (SI), AX
	SHRQ $32, AX
	IMULQ R8, AX
	SHRQ $32, AX
	IMUL3Q $52, AX, AX
	ADDQ DI, AX
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	PREFETCHT0 128(AX)
	PREFETCHT0 192(AX)
	ADDQ $8, SI
	DECQ CX
	JNE loop

done:
	MOVL $0, ret+40(FP)
	RET
