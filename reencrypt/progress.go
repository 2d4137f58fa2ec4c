package reencrypt

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Bar renders a run's progress as plain text: on a terminal one line
// redrawn in place with "\r"; otherwise (a log, a pipe) one line every Step
// percent. Each line has a bar, done/total, percent, rate and ETA.
type Bar struct {
	W     io.Writer
	TTY   bool
	Label string
	// Step is the percent between lines when not a TTY (default 10).
	Step int
	Now  func() time.Time

	start    time.Time
	started  bool
	lastStep int
	lastDraw time.Time
	lastLine string
	lastDone int // done at the last line printed (not a TTY)
	done     int
	total    int
}

const (
	barWidth     = 24
	redrawPeriod = 100 * time.Millisecond
)

// Update reports progress; it is a func(done, total int) for Run.
func (b *Bar) Update(done, total int) {
	if b.Now == nil {
		b.Now = time.Now
	}
	if b.Step <= 0 {
		b.Step = 10
	}
	now := b.Now()
	if !b.started {
		b.started, b.start, b.lastStep = true, now, -1
	}
	b.done, b.total = done, total
	pct := percent(done, total)
	if b.TTY {
		if done < total && now.Sub(b.lastDraw) < redrawPeriod && b.lastLine != "" {
			return
		}
		b.lastDraw = now
		line := b.line(now)
		// Pad over a longer previous line.
		pad := max(0, len(b.lastLine)-len(line))
		fmt.Fprintf(b.W, "\r%s%s", line, strings.Repeat(" ", pad))
		b.lastLine = line
		return
	}
	if s := pct / b.Step; s != b.lastStep || done == total && b.lastLine == "" {
		b.lastStep, b.lastDone = s, done
		b.lastLine = b.line(now)
		fmt.Fprintln(b.W, b.lastLine)
	}
}

// Finish ends the output: the final state is drawn and the line closed.
func (b *Bar) Finish() {
	if !b.started {
		return
	}
	if b.TTY {
		b.lastDraw = time.Time{}
		b.Update(b.done, b.total)
		fmt.Fprintln(b.W)
		return
	}
	if b.lastLine == "" || b.lastDone != b.done {
		b.lastLine, b.lastDone = b.line(b.Now()), b.done
		fmt.Fprintln(b.W, b.lastLine)
	}
}

func percent(done, total int) int {
	if total <= 0 {
		return 100
	}
	return min(100, done*100/total)
}

func (b *Bar) line(now time.Time) string {
	pct := percent(b.done, b.total)
	fill := pct * barWidth / 100
	bar := strings.Repeat("#", fill) + strings.Repeat("-", barWidth-fill)
	elapsed := now.Sub(b.start)
	rate, eta := "", "ETA --"
	if b.done > 0 && elapsed > 0 {
		r := float64(b.done) / elapsed.Seconds()
		rate = fmt.Sprintf(" %.1f files/s", r)
		left := time.Duration(float64(b.total-b.done) / r * float64(time.Second))
		eta = "ETA " + left.Round(time.Second).String()
	}
	if b.done >= b.total {
		eta = "done in " + elapsed.Round(time.Millisecond).String()
	}
	label := b.Label
	if label != "" {
		label += " "
	}
	return fmt.Sprintf("%s[%s] %d/%d %3d%%%s %s", label, bar, b.done, b.total, pct, rate, eta)
}
