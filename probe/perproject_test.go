package probe_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/probe"
	"github.com/ekm-dev/ekm/store"
)

// M1: a key whose customer can refuse single projects, with 200 projects,
// probed 50 projects per check: the key's health comes from its org-level
// check alone and stays valid every round; each round decrypts at most 50
// projects, at most 4 at once; a full cycle takes ceil(200/50) = 4 rounds,
// resuming from the stored cursor; a project refused is found within one
// cycle, and found again allowed within the next.
func TestManyProjectsBoundedRounds(t *testing.T) {
	const projects, perCheck, conc = 200, 50, 4
	const cycle = (projects + perCheck - 1) / perCheck
	e := newEnv(t)
	ctx := context.Background()
	e.drv.SetProjectScoped(true)
	ek := e.extKey(t, kmsfake.Type)
	var pids []string
	for range projects {
		pids = append(pids, e.project(t, ek))
	}
	slices.Sort(pids)
	p := probe.New(probe.Config{Store: e.st, Service: e.svc, Interval: time.Hour, EncryptEvery: 1,
		ProjectsPerCheck: perCheck, ProjectConcurrency: conc})
	denied := pids[137] // in the third batch
	e.drv.DenyProject(denied)
	e.drv.MaxInFlight.Store(0)

	found := 0
	for r := 1; r <= cycle; r++ {
		before := e.drv.Unwraps.Load()
		p.Round(ctx)
		// The key's check: one decrypt (two if its sample is the refused
		// project: then the org-level encrypt and decrypt); then the batch.
		if n := e.drv.Unwraps.Load() - before; n != perCheck+1 && n != perCheck+2 {
			t.Fatalf("round %d: %d decrypts, want %d (the key's check + one batch)", r, n, perCheck+1)
		}
		if s := e.status(t, ek.ID).Status; s != store.StatusValid {
			t.Fatalf("round %d: key %q: projects are not the key's health", r, s)
		}
		cur, err := e.st.ProjectProbeCursor(ctx, e.org, ek.ID)
		if err != nil {
			t.Fatal(err)
		}
		// 200 is a multiple of 50: the cursor stays on the last project
		// after round 4, and round 5 starts over from the first.
		if want := pids[r*perCheck-1]; cur != want {
			t.Fatalf("round %d: cursor %q, want %q", r, cur, pids[r*perCheck-1])
		}
		if _, err := e.st.GetProjectAccess(ctx, e.org, denied); err == nil && found == 0 {
			found = r
		}
	}
	if found != 3 {
		t.Fatalf("refused project found in round %d, want 3 (within the cycle of %d rounds)", found, cycle)
	}
	if m := e.drv.MaxInFlight.Load(); m > conc {
		t.Fatalf("%d project decrypts at once, limit %d", m, conc)
	}
	var u *keyring.UnavailableError
	if _, err := e.kr.Key(ctx, e.org, denied, 1); !errors.As(err, &u) || u.ProjectID != denied {
		t.Fatalf("refused project: %v", err)
	}
	if _, err := e.kr.Key(ctx, e.org, pids[0], 1); err != nil {
		t.Fatalf("another project: %v", err)
	}
	if n := e.events(t, "external_key.degraded") + e.events(t, "external_key.unavailable"); n != 0 {
		t.Fatalf("%d key health events for one project's refusal", n)
	}
	if n := e.events(t, "external_key.project_unavailable"); n != 1 {
		t.Fatalf("%d project_unavailable events", n)
	}

	// The next cycle starts from the first project.
	p.Round(ctx)
	if cur, _ := e.st.ProjectProbeCursor(ctx, e.org, ek.ID); cur != pids[perCheck-1] {
		t.Fatalf("round %d: cursor %q, want the first batch's last %q", cycle+1, cur, pids[perCheck-1])
	}

	// Allowed again: found within one cycle.
	e.drv.AllowProject(denied)
	restored := 0
	for r := 1; r <= cycle && restored == 0; r++ {
		p.Round(ctx)
		if _, err := e.kr.Key(ctx, e.org, denied, 1); err == nil {
			restored = r
		}
	}
	if restored == 0 {
		t.Fatalf("project allowed again still refused after a cycle of %d rounds", cycle)
	}
	if n := e.events(t, "external_key.project_restored"); n != 1 {
		t.Fatalf("%d project_restored events", n)
	}
	t.Logf("%d projects, %d per check, %d at once: a cycle of %d rounds, %d decrypts per round (1 for the key + %d); key valid every round; refused project found in round %d, restored %d rounds after access came back; at most %d decrypts at once",
		projects, perCheck, conc, cycle, perCheck+1, perCheck, found, restored, e.drv.MaxInFlight.Load())
}

// An outage never denies a project and never lifts a refusal: the key is
// degraded (its org-level check failed) and the projects are not probed.
// Once the KMS answers, a refusal stored while this replica's gates were
// lost (a restart, the bound of closed gates) is decided from the stored
// row: access back clears it.
func TestProjectProbeOutageAndStoredRefusal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.drv.SetProjectScoped(true)
	ek := e.extKey(t, kmsfake.Type)
	var pids []string
	for range 20 {
		pids = append(pids, e.project(t, ek))
	}
	denied := pids[3]
	e.drv.DenyProject(denied)
	e.p.Round(ctx)
	if _, err := e.st.GetProjectAccess(ctx, e.org, denied); err != nil {
		t.Fatalf("refusal not recorded: %v", err)
	}

	e.drv.Fail(kmsfake.ErrOutage)
	e.p.Round(ctx)
	e.p.Round(ctx)
	if s := e.status(t, ek.ID).Status; s != store.StatusDegraded {
		t.Fatalf("key %q during an outage, want degraded", s)
	}
	for _, pid := range pids {
		_, err := e.st.GetProjectAccess(ctx, e.org, pid)
		if (pid == denied) != (err == nil) {
			t.Fatalf("project %s after an outage: refusal %v", pid, err)
		}
	}
	if n := e.events(t, "external_key.project_unavailable"); n != 1 {
		t.Fatalf("%d project_unavailable events", n)
	}

	// This replica forgets its gates; the customer allows the project again.
	e.kr.ClearProjectGates()
	e.drv.Fail(nil)
	e.drv.AllowProject(denied)
	e.p.Round(ctx)
	if _, err := e.st.GetProjectAccess(ctx, e.org, denied); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refusal still stored after access came back: %v", err)
	}
	if n := e.events(t, "external_key.project_restored"); n != 1 {
		t.Fatalf("%d project_restored events", n)
	}
	if s := e.status(t, ek.ID).Status; s != store.StatusValid {
		t.Fatalf("key %q", s)
	}
}
