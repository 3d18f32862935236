package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
)

// progress reports bench's steps: on a terminal, one bar redrawn in place
// with the latest step under it; otherwise one plain line per step, so a
// log or a pipe keeps them all.
type progress struct {
	w     io.Writer
	tty   bool
	total int
	n     int
	start time.Time
	drawn bool // a bar is on the screen, to be redrawn
}

func newProgress(w io.Writer, total int) *progress {
	f, ok := w.(*os.File)
	tty := ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
	return &progress{w: w, tty: tty, total: total, start: time.Now()}
}

// note prints a line that is not a step.
func (p *progress) note(line string) {
	p.clear()
	fmt.Fprintln(p.w, line)
}

// step counts one step done and reports it.
func (p *progress) step(line string) {
	p.n++
	if !p.tty {
		fmt.Fprintf(p.w, "bench: %d/%d  %s\n", p.n, p.total, line)
		return
	}
	p.clear()
	const width = 30
	filled := width * p.n / max(p.total, 1)
	eta := ""
	if p.n < p.total {
		left := time.Since(p.start) / time.Duration(p.n) * time.Duration(p.total-p.n)
		eta = fmt.Sprintf(", about %v left", left.Round(time.Second))
	}
	// The bar, then the step's line below it; the next draw moves back up.
	fmt.Fprintf(p.w, "[%s%s] %d/%d%s\n  %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.n, p.total, eta, line)
	p.drawn = true
}

// clear erases the bar and its line.
func (p *progress) clear() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K\033[1A\r\033[K")
		p.drawn = false
	}
}

// done leaves the last step on the screen and ends its line.
func (p *progress) done() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
