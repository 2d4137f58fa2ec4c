package keyring

// SetJoinedHook makes k call f (with its lock held: f must not call k)
// whenever a caller joins an unwrap already in flight.
func SetJoinedHook(k *Keyring, f func()) { k.joined = f }

// SetMaxProjectGates lowers the bound of closed project gates.
func SetMaxProjectGates(k *Keyring, n int) {
	k.mu.Lock()
	k.maxClosed = n
	k.mu.Unlock()
}
