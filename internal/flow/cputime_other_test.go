//go:build !linux

package flow

func threadCPU() int64 { return -1 }
