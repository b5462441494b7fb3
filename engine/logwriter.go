package engine

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/filterd/filterd/packet"
	"github.com/filterd/filterd/ruleset"
)

// LogWriter writes the LOG target's lines, in the kernel's format, to an
// io.Writer, one line per packet. Only packets that hit a LOG rule pass
// through it; it serialises them with a mutex and reuses one buffer. A nil
// writer only counts.
type LogWriter struct {
	mu    sync.Mutex
	w     io.Writer
	buf   []byte
	lines atomic.Uint64
	errs  atomic.Uint64
}

// NewLogWriter returns a LogWriter writing to w (nil: count only).
func NewLogWriter(w io.Writer) *LogWriter {
	return &LogWriter{w: w, buf: make([]byte, 0, 1024)}
}

// Log is a ruleset.CompileOptions.Log callback.
func (l *LogWriter) Log(r *ruleset.Rule, p *packet.Packet) {
	l.lines.Add(1)
	if l.w == nil {
		return
	}
	l.mu.Lock()
	l.buf = AppendLogLine(l.buf[:0], p, &r.Target.Log, p.L2)
	l.buf = append(l.buf, '\n')
	if _, err := l.w.Write(l.buf); err != nil {
		l.errs.Add(1)
	}
	l.mu.Unlock()
}

// Lines returns how many LOG lines were produced (written or counted).
func (l *LogWriter) Lines() uint64 { return l.lines.Load() }

// WriteErrors returns how many lines could not be written.
func (l *LogWriter) WriteErrors() uint64 { return l.errs.Load() }
