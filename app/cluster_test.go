package app_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// running is an App serving in the background.
type running struct {
	a      *app.App
	log    *syncWriter
	buf    *bytes.Buffer
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg app.Config) *running {
	t.Helper()
	return startAfter(t, cfg, func() {})
}

func (r *running) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.a.Close()
		r.cancel = nil
	}
}

func (r *running) logged(msg string) bool {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	return strings.Contains(r.buf.String(), `"msg":"`+msg)
}

// A second server on the same SQLite database refuses to start, saying
// why; operator commands keep working beside the first; once the first
// stops, a server starts again.
func TestSQLiteSecondServerRefused(t *testing.T) {
	dir := t.TempDir()
	first := start(t, app.Config{DataDir: dir})
	second := start(t, app.Config{DataDir: dir})
	var err error
	select {
	case err = <-second.done:
		second.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("a second server on the same SQLite database is running")
	}
	if !errors.Is(err, app.ErrSQLiteInUse) || !strings.Contains(err.Error(), "PostgreSQL") || !strings.Contains(err.Error(), "serve.lock") {
		t.Fatalf("second server: %v", err)
	}
	t.Log(err)
	// An operator command beside the running server.
	st, err := app.OpenStore(context.Background(), app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := adminapi.CreateOrg(context.Background(), st, "beside", time.Now()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	first.stop()
	third := start(t, app.Config{DataDir: dir})
	select {
	case err := <-third.done:
		t.Fatalf("a server after the first stopped: %v", err)
	default:
	}
}

// Three replicas on one PostgreSQL database: exactly one runs the
// background jobs (its blob sweep is the only one); when it stops, another
// takes over.
func TestLeaderJobsOnOneReplica(t *testing.T) {
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	var rs []*running
	for range 3 {
		rs = append(rs, start(t, app.Config{DataDir: dir, Database: dsn, ProbeInterval: 500 * time.Millisecond}))
	}
	leaders := func() (n int, who *running) {
		for _, r := range rs {
			if r.logged("leader: this replica runs the background jobs") {
				n, who = n+1, r
			}
		}
		return n, who
	}
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := leaders(); n == 0; n, _ = leaders() {
		if time.Now().After(deadline) {
			t.Fatal("no replica leads")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // several lease renewals
	n, first := leaders()
	if n != 1 {
		t.Fatalf("%d replicas ran the background jobs", n)
	}
	sweeps := 0
	for _, r := range rs {
		if r.logged("blob sweep") {
			sweeps++
		}
	}
	if sweeps != 1 || !first.logged("blob sweep") {
		t.Fatalf("%d replicas swept, want the leader only", sweeps)
	}
	first.stop()
	deadline = time.Now().Add(5 * time.Second)
	for n, _ := leaders(); n < 2; n, _ = leaders() {
		if time.Now().After(deadline) {
			t.Fatal("no replica took over from the stopped leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
