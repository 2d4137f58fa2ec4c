package readcache_test

// The guarantees of the data plane's caches end to end: two replicas (two
// app.App serving on one PostgreSQL database, as in production), the
// change made through the Admin API of one, requests to both.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// propagation is how soon another replica must refuse (the change log's
// delivery bound, docs/lifecycle.md).
const propagation = time.Second

type replica struct {
	a   *app.App
	url string
}

func startReplica(t *testing.T, cfg app.Config) *replica {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	a, err := app.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func(s string) { addr <- s }) }()
	t.Cleanup(func() { cancel(); <-done; a.Close() })
	select {
	case s := <-addr:
		return &replica{a: a, url: "http://" + s}
	case err := <-done:
		t.Fatalf("replica did not start: %v", err)
	}
	return nil
}

func call(t *testing.T, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return res.StatusCode, m
}

// encrypt is one data plane request: its status and the key version used.
func encrypt(t *testing.T, r *replica, key string) (int, float64) {
	t.Helper()
	st, m := call(t, "POST", r.url+"/v1/crypto/encrypt", key, `{"plaintext":"aGVsbG8="}`)
	v, _ := m["key_version"].(float64)
	return st, v
}

// fixture is an org with a project, a service account and its key, on two
// replicas whose caches hold the key and the project.
type fixture struct {
	a, b                    *replica
	org, admin              string
	project, sa, keyID, key string
}

func newFixture(t *testing.T) *fixture {
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	f := &fixture{}
	// A long probe interval: nothing here may rest on the periodic resync.
	cfg := app.Config{DataDir: dir, Database: dsn, ProbeInterval: time.Hour}
	f.a, f.b = startReplica(t, cfg), startReplica(t, cfg)
	// The 1 s bound is for replicas whose change listener is connected: a
	// replica just started catches up when it connects (a loaded CI
	// machine once took over a second to).
	for deadline := time.Now().Add(30 * time.Second); !f.a.a.Changes.Listening() || !f.b.a.Changes.Listening(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the replicas' change listeners did not connect")
		}
	}
	org, admin, err := adminapi.CreateOrg(context.Background(), f.a.a.Store, "cache test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.org, f.admin = org.ID, admin
	f.newKey(t)
	return f
}

// newKey makes a project with a service account key, and has both
// replicas cache them.
func (f *fixture) newKey(t *testing.T) {
	t.Helper()
	st, m := call(t, "POST", f.a.url+"/v1/organization/projects", f.admin, `{"name":"p"}`)
	if st != 200 {
		t.Fatalf("create project: %d %v", st, m)
	}
	f.project = m["id"].(string)
	st, m = call(t, "POST", f.a.url+"/v1/organization/projects/"+f.project+"/service_accounts", f.admin, `{"name":"svc"}`)
	if st != 200 {
		t.Fatalf("create service account: %d %v", st, m)
	}
	f.sa = m["id"].(string)
	k := m["api_key"].(map[string]any)
	f.keyID, f.key = k["id"].(string), k["value"].(string)
	// A key just created works at once on both (misses are not cached).
	for _, r := range []*replica{f.a, f.b, f.a, f.b} {
		if st, _ := encrypt(t, r, f.key); st != 200 {
			t.Fatalf("new key: %d", st)
		}
	}
}

// refused: the changing replica refuses the next request
// after the change answered; the other within propagation. Each check polls
// the other replica so that its cache is exercised (hits) until it refuses.
func (f *fixture) refused(t *testing.T, change func(), want int) {
	t.Helper()
	// Both caches hold the key and project now: keep the other replica
	// busy with hits while the change happens.
	stop := make(chan struct{})
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("POST", f.b.url+"/v1/crypto/encrypt", bytes.NewReader([]byte(`{"plaintext":"aGVsbG8="}`)))
			req.Header.Set("Authorization", "Bearer "+f.key)
			if res, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
	}()
	change()
	changed := time.Now()
	if st, _ := encrypt(t, f.a, f.key); st != want {
		t.Fatalf("changing replica, first request after the change answered: %d, want %d", st, want)
	}
	close(stop)
	<-busy
	for {
		st, _ := encrypt(t, f.b, f.key)
		if st == want {
			t.Logf("other replica refused %s after the change answered", time.Since(changed).Round(time.Millisecond))
			break
		}
		if time.Since(changed) > propagation {
			t.Fatalf("other replica still answers %d %s after the change", st, time.Since(changed))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// And stays refused (nothing re-cached the old state).
	for _, r := range []*replica{f.a, f.b} {
		if st, _ := encrypt(t, r, f.key); st != want {
			t.Fatalf("refused, then %d", st)
		}
	}
}

func TestReplicasAPIKeyDeleted(t *testing.T) {
	f := newFixture(t)
	f.refused(t, func() {
		if st, m := call(t, "DELETE", f.a.url+"/v1/organization/projects/"+f.project+"/api_keys/"+f.keyID, f.admin, ""); st != 200 {
			t.Fatalf("delete key: %d %v", st, m)
		}
	}, http.StatusUnauthorized)
}

func TestReplicasServiceAccountDeleted(t *testing.T) {
	f := newFixture(t)
	f.refused(t, func() {
		if st, m := call(t, "DELETE", f.a.url+"/v1/organization/projects/"+f.project+"/service_accounts/"+f.sa, f.admin, ""); st != 200 {
			t.Fatalf("delete service account: %d %v", st, m)
		}
	}, http.StatusUnauthorized)
}

func TestReplicasProjectArchived(t *testing.T) {
	f := newFixture(t)
	f.refused(t, func() {
		if st, m := call(t, "POST", f.a.url+"/v1/organization/projects/"+f.project+"/archive", f.admin, ""); st != 200 {
			t.Fatalf("archive: %d %v", st, m)
		}
	}, http.StatusForbidden)
}

// A rotation moves new data to the new version: at once on the rotating
// replica, within propagation on the other.
func TestReplicasProjectKeyRotated(t *testing.T) {
	f := newFixture(t)
	if st, m := call(t, "POST", f.a.url+"/v1/organization/projects/"+f.project+"/rotate_key", f.admin, ""); st != 200 {
		t.Fatalf("rotate: %d %v", st, m)
	}
	rotated := time.Now()
	if st, v := encrypt(t, f.a, f.key); st != 200 || v != 2 {
		t.Fatalf("rotating replica, first request after the rotation: %d, version %v", st, v)
	}
	for {
		st, v := encrypt(t, f.b, f.key)
		if st == 200 && v == 2 {
			t.Logf("other replica on version 2 after %s", time.Since(rotated).Round(time.Millisecond))
			break
		}
		if time.Since(rotated) > propagation {
			t.Fatalf("other replica still writes under version %v (%d) %s after the rotation", v, st, time.Since(rotated))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// After a re-key the cached project names the new external key, so its
// gate governs: closing it refuses the project's data at once on the
// re-keying replica and within propagation on the other (whose key cache
// still held the key wrapped by the old one).
func TestReplicasProjectRekeyed(t *testing.T) {
	f := newFixture(t)
	st, m := call(t, "POST", f.a.url+"/v1/organization/external_keys", f.admin, `{"type":"local","name":"customer key"}`)
	if st != 200 {
		t.Fatalf("register key: %d %v", st, m)
	}
	ek := m["id"].(string)
	closeGate := func(kr *keyring.Keyring) {
		kr.MarkUnavailable(ek, &keyring.UnavailableError{ExternalKeyID: ek, Class: kms.Revoked, Code: "test_revoked", Message: "closed by the test"})
	}
	f.refused(t, func() {
		if st, m := call(t, "POST", f.a.url+"/v1/organization/projects/"+f.project, f.admin, fmt.Sprintf(`{"external_key_id":%q}`, ek)); st != 200 {
			t.Fatalf("re-key: %d %v", st, m)
		}
		// Only this replica's gate and the other's: what each refuses
		// then depends only on which key it thinks wraps the project.
		closeGate(f.a.a.Keyring)
		closeGate(f.b.a.Keyring)
	}, http.StatusForbidden)
}

// Last use is still recorded for requests served from the cache.
func TestReplicasLastUsedWithCache(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		if st, _ := encrypt(t, f.a, f.key); st != 200 {
			t.Fatal(st)
		}
	}
	if err := f.a.a.LastUsed.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	k, err := f.a.a.Store.GetAPIKey(context.Background(), f.org, f.keyID)
	if err != nil {
		t.Fatal(err)
	}
	if k.LastUsedAt.IsZero() {
		t.Fatal("last_used_at not recorded")
	}
}
