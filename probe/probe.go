// Package probe schedules the health checks of every external key that
// protects data; package lifecycle runs each check and applies what it
// finds (docs/lifecycle.md):
//
//   - revocation-class failure (access withdrawn, key disabled/deleted): the
//     key is marked unavailable, every cached project key it wraps is evicted
//     at once, and every read and write of its projects fails fast;
//   - outage-class failure (timeouts, 5xx, 429): the key is marked degraded,
//     cached project keys keep serving until their hard TTL;
//   - success after either: the key is valid again and nothing was lost;
//   - a new current KEK version (the customer rotated): recorded, and project
//     keys still wrapped by older versions are rewrapped in the background,
//     idempotently and at a bounded rate.
//
// Replicas share the work through probe leases: in each round a replica
// probes only the keys whose lease ("probe/<external key id>", valid for
// just under an interval, timed by the database's clock) it takes, and
// makes its gates follow the stored health of the others
// (lifecycle.Service.Follow), which their prober records and announces
// through the change log. A check never outlives its lease: a long one
// renews it, and one whose lease cannot be renewed is cancelled. So the cluster probes each
// key about once per interval whatever the number of replicas, and the
// keys of a replica that died are taken over by the next round of another
// once their leases expire. Without a Holder (one process alone) every
// key is probed every round. The KMS load is one decrypt per key per
// interval (plus a describe+encrypt every EncryptEvery probes of the key),
// independent of request rate and of the number of replicas; for a type
// whose customer can refuse single projects (AWS), an org-level encrypt and
// decrypt plus at most ProjectsPerCheck project decrypts (from a cursor
// stored with the key, so a key with N projects has each probed once every
// ceil(N/ProjectsPerCheck) probes). A round reads its keys a page at a time (each with the
// project key to test-decrypt, in one query) and checks at most Concurrency
// keys at once, at most PerOrg of one org, each within CheckTimeout; so a
// slow or throttled KMS of one customer delays the others' checks by at most
// a bounded amount (docs/lifecycle.md). Rewraps after a KEK rotation run
// after the checks, never holding up a health check. A check or rewrap that
// panics (a bug in a provider or its SDK) is logged and counted as an
// outage of that key; it never ends the process nor closes a gate.
package probe

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/store"
)

// Config configures a Prober.
type Config struct {
	Store   store.Store
	Service *lifecycle.Service
	// Interval between probes of one key (default 30s). Each round is
	// jittered by ±10% so replicas and keys spread out.
	Interval time.Duration
	// EncryptEvery: every Nth round also describes the key (rotation
	// detection) and does an encrypt (default 10; 1 = every round).
	EncryptEvery int
	// RewrapPerRound bounds background rewraps per key per round after a
	// KEK rotation (default 50), keeping well below the KMSs' limits.
	RewrapPerRound int
	// Concurrency bounds keys checked at once (default 32).
	Concurrency int
	// PerOrg bounds keys of one org checked at once (default 4).
	PerOrg int
	// CheckTimeout bounds one key's check (default the interval, at least
	// 5s): a KMS slower than that is degraded for this round. A check never
	// outlives its probe lease: while it runs, its lease is renewed every
	// LeaseTTL/3, and a check whose lease could not be renewed is cancelled
	// a tenth of LeaseTTL before the lease ends (counted on this replica's
	// clock from before the statement that took or renewed it).
	CheckTimeout time.Duration
	// ProjectsPerCheck and ProjectConcurrency bound the per-project part of
	// a check of a key whose customer can refuse single projects (AWS): at
	// most ProjectsPerCheck of its projects per check (default
	// lifecycle.DefaultProjectsPerCheck, 100), at most ProjectConcurrency
	// decrypts at once (default lifecycle.DefaultProjectConcurrency, 8),
	// resuming from the key's stored cursor; a key with N projects has each
	// probed once every ceil(N/ProjectsPerCheck) checks (docs/aws.md).
	ProjectsPerCheck   int
	ProjectConcurrency int
	// PageSize is how many keys one store query reads (default 500).
	PageSize int
	// Holder, if set, is this replica in the probe leases
	// (cluster.ReplicaID): a key is probed only by the replica that takes
	// its lease. "" probes every key every round.
	Holder string
	// LeaseTTL is how long a probe lease lasts (default 0.9 × Interval, so
	// that the holder's next round, at least 0.9 × Interval later, finds it
	// expired: no key is probed twice within LeaseTTL across the cluster).
	// Leases are timed by the database's clock (store AcquireLeasesFor), so
	// replicas' clocks need not agree.
	LeaseTTL time.Duration
	// Now, for tests only, times the probe leases by this clock instead of
	// the database's (store AcquireLeases), so that a test can move time.
	// Leave it nil in a server: replicas' clocks may disagree.
	Now     func() time.Time
	Logger  *slog.Logger
	Metrics *metrics.Metrics
}

// LeasePrefix starts the name of each probe lease; the external key id
// follows.
const LeasePrefix = "probe/"

// Prober runs health probes.
type Prober struct {
	cfg   Config
	mu    sync.Mutex
	round map[string]int // per external key: rounds done; only keys seen in the last round
	held  []string       // probe leases taken in the last round
}

// New returns a prober.
func New(cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.EncryptEvery <= 0 {
		cfg.EncryptEvery = 10
	}
	if cfg.RewrapPerRound <= 0 {
		cfg.RewrapPerRound = 50
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 32
	}
	if cfg.PerOrg <= 0 {
		cfg.PerOrg = 4
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = cfg.Interval * 9 / 10
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = max(cfg.Interval, 5*time.Second)
	}
	return &Prober{cfg: cfg, round: map[string]int{}}
}

// Run probes immediately, then every Interval (jittered) until ctx is done.
// On the way out it releases its probe leases, so that other replicas
// probe those keys at their next round rather than after the leases expire.
func (p *Prober) Run(ctx context.Context) {
	defer p.release()
	for {
		p.Round(ctx)
		j := 0.9 + 0.2*rand.Float64()
		t := time.NewTimer(time.Duration(float64(p.cfg.Interval) * j))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Round probes every external key in use once (with a Holder: each whose
// probe lease it takes, following the stored health of the others), then
// rewraps (bounded per key) what KEK rotations left of the keys it probed.
func (p *Prober) Round(ctx context.Context) {
	start := time.Now()
	counts := map[string]float64{store.StatusValid: 0, store.StatusDegraded: 0, store.StatusUnavailable: 0}
	seen := map[string]int{}
	var rewraps []rewrap
	var mu sync.Mutex
	complete := true
	p.mu.Lock()
	p.held = nil // the last round's have expired by now
	p.mu.Unlock()
	for after := ""; ctx.Err() == nil; {
		page, err := p.cfg.Store.ProbeTargets(ctx, after, p.cfg.PageSize)
		if err != nil {
			if ctx.Err() == nil {
				p.cfg.Logger.Warn("probe: listing external keys failed", "err", err)
			}
			complete = false
			break
		}
		var leased map[string]int64
		var leaseEnd time.Time // on this clock: when the checks of this page's leases must end unless renewed
		if p.cfg.Holder != "" {
			leaseEnd = p.leaseEnd(time.Now())
			if leased, err = p.lease(ctx, page); err != nil {
				if ctx.Err() == nil {
					p.cfg.Logger.Warn("probe: taking probe leases failed", "err", err)
				}
				complete = false
				break
			}
		}
		// One goroutine per key of the page (at most PageSize), each taking
		// a slot of its org, then a global slot.
		global := make(chan struct{}, p.cfg.Concurrency)
		perOrg := map[string]chan struct{}{}
		var wg sync.WaitGroup
		for _, t := range page {
			n := p.next(t.Key.ID)
			seen[t.Key.ID] = n + 1
			deep := n%p.cfg.EncryptEvery == 0
			if leased != nil {
				taken, ok := leased[t.Key.ID]
				if !ok {
					// Another replica probes it: follow what it records.
					p.cfg.Service.Follow(ctx, t.Key)
					mu.Lock()
					counts[t.Key.Status]++
					mu.Unlock()
					continue
				}
				deep = (taken-1)%int64(p.cfg.EncryptEvery) == 0
			}
			org := perOrg[t.Key.OrgID]
			if org == nil {
				org = make(chan struct{}, p.cfg.PerOrg)
				perOrg[t.Key.OrgID] = org
			}
			wg.Go(func() {
				if !acquire(ctx, org) {
					return
				}
				defer func() { <-org }()
				if !acquire(ctx, global) {
					return
				}
				defer func() { <-global }()
				res, ok := p.check(ctx, t, deep, leaseEnd)
				if !ok {
					return // its lease ran out or could not be renewed: nothing recorded, the next round checks the key
				}
				mu.Lock()
				defer mu.Unlock()
				counts[res.Status]++
				if res.Current != "" {
					rewraps = append(rewraps, rewrap{t.Key, res.Current})
				}
			})
		}
		wg.Wait()
		if len(page) < p.cfg.PageSize {
			break
		}
		after = page[len(page)-1].Key.ID
	}
	if ctx.Err() != nil {
		complete = false
	}
	for _, r := range rewraps {
		if ctx.Err() != nil {
			break
		}
		p.rewrap(ctx, r)
	}
	if complete {
		// Keys no longer in use (deleted, or every project archived) are
		// forgotten, so the map holds only what the last round saw.
		p.mu.Lock()
		p.round = seen
		p.mu.Unlock()
		if p.cfg.Metrics != nil {
			for s, n := range counts {
				p.cfg.Metrics.KeyStatus.WithLabelValues(s).Set(n)
			}
			p.cfg.Metrics.ProbeRound.Set(time.Since(start).Seconds())
		}
	}
}

// lease takes the probe leases of a page's keys that are free, in one
// statement, and returns how often each taken one has been taken (this
// time included), by external key id.
func (p *Prober) lease(ctx context.Context, page []store.ProbeTarget) (map[string]int64, error) {
	names := make([]string, len(page))
	for i, t := range page {
		names[i] = LeasePrefix + t.Key.ID
	}
	var ls []store.Lease
	var err error
	if p.cfg.Now != nil {
		now := p.cfg.Now()
		ls, err = p.cfg.Store.AcquireLeases(ctx, p.cfg.Holder, names, now, now.Add(p.cfg.LeaseTTL), false)
	} else {
		ls, err = p.cfg.Store.AcquireLeasesFor(ctx, p.cfg.Holder, names, p.cfg.LeaseTTL, false)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(ls))
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range ls {
		out[strings.TrimPrefix(l.Name, LeasePrefix)] = l.Taken
		p.held = append(p.held, l.Name)
	}
	return out, nil
}

// release frees the probe leases taken in the last round.
func (p *Prober) release() {
	p.mu.Lock()
	held := p.held
	p.held = nil
	p.mu.Unlock()
	if p.cfg.Holder == "" || len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.cfg.Store.ReleaseLeases(ctx, p.cfg.Holder, held); err != nil {
		p.cfg.Logger.Warn("probe: releasing probe leases failed", "err", err)
	}
}

type rewrap struct {
	key     store.ExternalKey
	current string
}

// check runs one key's check within CheckTimeout. When the key was leased
// (leaseEnd not zero: when its lease ends, on this clock, less a tenth of
// LeaseTTL) the check never outlives its lease: a lease of which less than
// two thirds is left (the check waited for a slot) is renewed first (ok is
// false if less than a third is left after that), and while the check
// runs holdLease renews it, or cancels the check if it cannot (ok is then
// false and nothing is recorded). A panic below it (a bug
// in a KMS provider or its SDK) must not end the process, which would stop
// every tenant's service on this replica: it is logged (what panicked and
// where, never the panic's value, which could hold anything) and counted
// as an outage of that key in the round's figures. It never closes the
// gate or marks the key unavailable: a panic is not the customer
// withdrawing access.
func (p *Prober) check(ctx context.Context, t store.ProbeTarget, deep bool, leaseEnd time.Time) (res lifecycle.ProbeResult, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			p.cfg.Logger.Error("probe: a key's check panicked; counted as an outage, the key's gate and health are left as they were",
				"org_id", t.Key.OrgID, "external_key_id", t.Key.ID, "type", t.Key.Type, "panic", kms.DescribePanic(v), "stack", kms.PanicStack())
			res, ok = lifecycle.ProbeResult{Status: store.StatusDegraded}, true
		}
	}()
	cctx, cancelTimeout := context.WithTimeout(ctx, p.cfg.CheckTimeout)
	defer cancelTimeout()
	// A check cut short because its lease could not be renewed (the
	// database unreachable or stalled, or this replica stalled so long
	// that another took the lease) says nothing of the customer's key:
	// lifecycle records nothing for a cause other than DeadlineExceeded
	// (and a late record could overwrite what the lease's new holder
	// found), and the round skips the key: the next round checks it.
	cctx, cancelCause := context.WithCancelCause(cctx)
	lost := func() { cancelCause(errLeaseLost) }
	defer cancelCause(nil)
	if !leaseEnd.IsZero() {
		name := LeasePrefix + t.Key.ID
		if time.Until(leaseEnd) < p.cfg.LeaseTTL*2/3 {
			// The check waited for a slot: renew first, so that the lease
			// is not lost before holdLease's first renewal. A renewal that
			// fails or takes most of a lease leaves too little of it to
			// check in: the key is left to the next round.
			sent := time.Now()
			if p.renew(ctx, name, sent.Add(p.cfg.LeaseTTL/3)) {
				leaseEnd = p.leaseEnd(sent)
			}
			if time.Until(leaseEnd) < p.cfg.LeaseTTL/3 {
				return lifecycle.ProbeResult{}, false
			}
		}
		held := make(chan struct{})
		go func() { defer close(held); p.holdLease(cctx, lost, name, leaseEnd) }()
		defer func() { cancelCause(nil); <-held }()
	}
	opt := lifecycle.ProbeOptions{Deep: deep, ProjectsPerCheck: p.cfg.ProjectsPerCheck, ProjectConcurrency: p.cfg.ProjectConcurrency}
	res = p.cfg.Service.Probe(cctx, t, opt)
	if errors.Is(context.Cause(cctx), errLeaseLost) {
		return lifecycle.ProbeResult{}, false
	}
	return res, true
}

// errLeaseLost is the cause of a check cancelled because its probe lease
// could not be renewed.
var errLeaseLost = errors.New("probe: the check's lease could not be renewed")

// leaseEnd is when a check must have ended under a lease taken or renewed
// by a statement sent at sent: the database's instant of the lease is no
// earlier, so the lease lasts at least until sent + LeaseTTL in real time;
// a tenth is kept for recording what the check found.
func (p *Prober) leaseEnd(sent time.Time) time.Time {
	return sent.Add(p.cfg.LeaseTTL - p.cfg.LeaseTTL/10)
}

// holdLease renews the probe lease name every LeaseTTL/3 until ctx ends;
// if the lease reaches end (see leaseEnd) without a renewal (the database
// unreachable, or the lease taken by another replica) it calls lost, which
// cancels the check. A renewal is given until end, so a stalled statement
// cannot hold the check past it.
func (p *Prober) holdLease(ctx context.Context, lost func(), name string, end time.Time) {
	// The cut at the lease's end is a timer of its own, so it does not
	// wait for a renewal statement to return (one that did not honour its
	// deadline would otherwise hold the check past the lease).
	cut := time.AfterFunc(time.Until(end), func() {
		p.cfg.Logger.Warn("probe: a check outlasted its probe lease, which could not be renewed; cancelled, nothing recorded, the next round checks the key", "lease", name)
		lost()
	})
	defer cut.Stop()
	tick := time.NewTicker(p.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sent := time.Now()
		if !p.renew(ctx, name, end) {
			continue // the cut stays at the old end
		}
		if !cut.Stop() {
			return // the cut came first: the check is cancelled
		}
		end = p.leaseEnd(sent)
		cut.Reset(time.Until(end))
	}
}

// renew takes the probe lease name again for LeaseTTL if it is free or
// held by this replica; it reports whether this replica holds it now. If
// end is set the statement is given until then, when the running check
// must end without a renewal: one that stalls (a slow or locked database)
// past it cannot keep the check running after its lease may have gone to
// another replica.
func (p *Prober) renew(ctx context.Context, name string, end time.Time) bool {
	if !end.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, end)
		defer cancel()
	}
	var ls []store.Lease
	var err error
	if p.cfg.Now != nil {
		now := p.cfg.Now()
		ls, err = p.cfg.Store.AcquireLeases(ctx, p.cfg.Holder, []string{name}, now, now.Add(p.cfg.LeaseTTL), true)
	} else {
		ls, err = p.cfg.Store.AcquireLeasesFor(ctx, p.cfg.Holder, []string{name}, p.cfg.LeaseTTL, true)
	}
	if err != nil && ctx.Err() == nil {
		p.cfg.Logger.Warn("probe: renewing a probe lease failed", "lease", name, "err", err)
	}
	return err == nil && len(ls) == 1
}

// rewrap runs the rewraps of one rotated key; a panic is logged as in check
// and the next round tries again.
func (p *Prober) rewrap(ctx context.Context, r rewrap) {
	defer func() {
		if v := recover(); v != nil {
			p.cfg.Logger.Error("probe: rewrapping after a KEK rotation panicked; the next round retries",
				"org_id", r.key.OrgID, "external_key_id", r.key.ID, "type", r.key.Type, "panic", kms.DescribePanic(v), "stack", kms.PanicStack())
		}
	}()
	p.cfg.Service.RewrapRotated(ctx, r.key, r.current, p.cfg.RewrapPerRound)
}

// acquire takes a slot of sem unless ctx ends first.
func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// next returns how many rounds have checked key id and counts this one.
func (p *Prober) next(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.round[id]
	p.round[id] = n + 1
	return n
}

// Tracked is how many keys the prober keeps a round count for.
func (p *Prober) Tracked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.round)
}
