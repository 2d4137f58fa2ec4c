package app

import (
	"log/slog"
	"runtime"

	"golang.org/x/sys/cpu"
)

// hardwareAES reports whether Go's crypto/aes and its GCM run on CPU
// instructions here, which are constant-time; it mirrors the checks of the
// standard library's AES and GCM assembly. Without them Go uses a
// table-based AES whose timing depends on key and data, and envelope
// version 3 runs the long-lived project key over attacker-chosen blocks
// (docs/FORMAT.md, Version 3, point 6).
func hardwareAES() bool {
	switch runtime.GOARCH {
	case "amd64":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasAESGCM
	case "ppc64", "ppc64le":
		return true // POWER8 and later, which Go requires, have vector AES
	}
	return false
}

// noHardwareAES is the start-up warning on a CPU without AES instructions.
const noHardwareAES = "no AES instructions on this CPU: Go's AES runs in software, whose timing depends on keys and data; " +
	"run ekm on a CPU with AES-NI and PCLMULQDQ, or the ARMv8 AES and PMULL extensions (docs/FORMAT.md, Version 3, point 6)"

// warnSoftwareAES logs noHardwareAES unless hw is true.
func warnSoftwareAES(l *slog.Logger, hw bool) {
	if !hw {
		l.Warn(noHardwareAES, "goarch", runtime.GOARCH)
	}
}
