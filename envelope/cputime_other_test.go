//go:build !unix

package envelope_test

func processCPU() int64 { return -1 }
