// Package emukit holds the cloud-independent parts of ekm's cloud emulators
// (emulator/azurecloud, emulator/awscloud, ...): a generated CA and a server
// certificate for a list of production host names, the TLS server
// lifecycle, the adjustable clock, counters, the request-log ring buffer,
// the fault-injection engine, the control-API host guard, atomic state-file
// persistence and small helpers for the `ekm emulate` commands.
//
// Every emulator serves production host names on one TLS port; clients
// redirect their TCP dials to it (internal/dialoverride), so official SDKs
// run their production code path. The control API lives under
// ControlPrefix on the listener's own address and is unauthenticated:
// IsControlHost and CheckLoopbackListen keep it on this machine.
package emukit
