package reencrypt_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/reencrypt"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestBarLinesWhenNotATerminal(t *testing.T) {
	var out strings.Builder
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := &reencrypt.Bar{W: &out, Label: "proj_x", Now: clk.now}
	b.Update(0, 40)
	for i := 1; i <= 40; i++ {
		clk.t = clk.t.Add(250 * time.Millisecond)
		b.Update(i, 40)
	}
	b.Finish()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 11 || strings.Contains(out.String(), "\r") {
		t.Fatalf("want a line per 10%% (11), got %d:\n%s", len(lines), out.String())
	}
	if !strings.HasPrefix(lines[0], "proj_x [------------------------] 0/40   0% ETA --") {
		t.Fatalf("first line %q", lines[0])
	}
	// 20 files in 5 s: 4 files/s, 20 left: 5 s.
	if lines[5] != "proj_x [############------------] 20/40  50% 4.0 files/s ETA 5s" {
		t.Fatalf("half-way line %q", lines[5])
	}
	if !strings.HasPrefix(lines[10], "proj_x [########################] 40/40 100% 4.0 files/s done in 10s") {
		t.Fatalf("last line %q", lines[10])
	}
}

func TestBarRedrawsOnATerminal(t *testing.T) {
	var out strings.Builder
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := &reencrypt.Bar{W: &out, TTY: true, Now: clk.now}
	b.Update(0, 1000)
	for i := 1; i <= 1000; i++ {
		clk.t = clk.t.Add(time.Millisecond)
		b.Update(i, 1000)
	}
	b.Finish()
	s := out.String()
	draws := strings.Count(s, "\r")
	// One draw at most every 100 ms of the 1 s run, plus start and end.
	if draws < 10 || draws > 14 || strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("%d redraws, %d newlines: %q", draws, strings.Count(s, "\n"), s)
	}
	last := s[strings.LastIndex(s, "\r")+1:]
	if !strings.HasPrefix(last, "[########################] 1000/1000 100%") {
		t.Fatalf("final draw %q", last)
	}
}

func TestBarEmptyJob(t *testing.T) {
	var out strings.Builder
	b := &reencrypt.Bar{W: &out, Label: "p"}
	b.Update(0, 0)
	b.Finish()
	if got := out.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "0/0 100%") {
		t.Fatalf("%q", got)
	}
}
