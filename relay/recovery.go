package relay

import (
	"bytes"
	"fmt"
	"time"

	"github.com/baton-relay/baton/cluster"
	"github.com/baton-relay/baton/internal/natsproto"
)

// Subjects of loss recovery (see progress.go for the protocol).
const (
	// ProgressPrefix + node carries that node's progress reports:
	// "id:epoch:counter" entries separated by spaces, only the batons
	// whose position rose since its previous report.
	ProgressPrefix = "baton.progress."
	// ControlSubject carries the leader's epoch announcements, in the
	// same entry format, sent before a lost baton is injected again.
	ControlSubject = "baton.control"
)

const (
	sidProgress = 1
	sidControl  = 2
)

// startControlConn opens the relay's second connection, for progress
// reports and epoch announcements, and starts its reader. Keeping this
// traffic off the baton connection keeps the hot loop free of it.
func (r *Relay) startControlConn(dial Dialer) error {
	c, err := r.handshake(dial, "-relay-control")
	if err != nil {
		return err
	}
	if err := c.Subscribe(ProgressPrefix+"*", sidProgress); err != nil {
		c.Close()
		return fmt.Errorf("subscribe %s*: %w", ProgressPrefix, err)
	}
	if err := c.Subscribe(ControlSubject, sidControl); err != nil {
		c.Close()
		return fmt.Errorf("subscribe %s: %w", ControlSubject, err)
	}
	r.ctl = c

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		c.Serve(controlHandler{r})
	}()
	return nil
}

// controlHandler runs on the control connection's reader goroutine.
type controlHandler struct{ r *Relay }

func (h controlHandler) Msg(m *natsproto.Msg) {
	r := h.r
	var err error
	switch {
	case bytes.HasPrefix(m.Subject, []byte(ProgressPrefix)):
		now := time.Now()
		r.lossMu.Lock()
		d := r.detector
		err = ParseReport(m.Data, func(id uint32, p Position) {
			if d != nil {
				d.Observe(id, p, now)
			}
		})
		r.lossMu.Unlock()
	case string(m.Subject) == ControlSubject:
		// An epoch announcement: from now on, copies of older epochs of
		// these batons die here.
		err = ParseReport(m.Data, func(id uint32, p Position) { r.table.Raise(id, p) })
	}
	if err != nil {
		r.countBad("bad control message", err)
	}
}

func (h controlHandler) ServerError(text string) {
	h.r.log.Error("nats server reported an error to the relay's control connection", "err", text)
}

func (h controlHandler) Drained() {}

// report publishes what this node's table learned since the last report,
// and every half loss timeout all that it knows. It runs on the control
// goroutine.
//
// The full reports are for a leader that has just started (a restarted
// node, or one whose predecessor died): changes alone never tell it where
// a baton that stopped before it started had got to, and it would inject
// that baton again from counter 0. With a full report from every node
// within half a loss timeout, it knows every baton's highest position
// before it may call any of them lost.
func (r *Relay) report(now time.Time) {
	all := !now.Before(r.nextFull)
	if all {
		r.nextFull = now.Add(max(r.cfg.LossTimeout/2, time.Millisecond))
	}
	r.reportBuf = r.table.AppendReport(r.reportBuf[:0], r.reported, all)
	if len(r.reportBuf) == 0 {
		return
	}
	r.ctl.Publish(ProgressPrefix+r.cfg.Node, nil, r.reportBuf)
	if err := r.ctl.Flush(); err != nil {
		r.log.Warn("cannot publish progress", "err", err)
	}
}

// recoverLost runs loss detection, on the control goroutine. Every node
// keeps a detector up to date from the reports, and only the leader acts
// on it: a node that takes over from a dead leader already knows which
// batons stopped, and recovers them without waiting a further timeout.
// A detector starts by giving every baton a whole timeout. With no peer
// alive nothing can move, so detection pauses (and restarts with a fresh
// grace when peers return).
func (r *Relay) recoverLost(v *cluster.View, batonsKnown bool, now time.Time) {
	leading := Leader(v.Relays, r.cfg.Leader) == r.cfg.Node
	active := batonsKnown && len(v.Peers) > 0 && r.cfg.LossTimeout > 0
	r.leading.Store(leading)

	r.lossMu.Lock()
	switch {
	case !active:
		r.detector = nil
	case r.detector == nil:
		r.detector = NewLossDetector(min(r.cfg.Batons, r.table.Len()), r.cfg.LossTimeout, now)
	}
	d := r.detector
	var lost []Recovery
	if d != nil {
		for id := range r.table.Len() {
			d.Observe(uint32(id), r.table.Get(uint32(id)), now)
		}
		if leading {
			lost = d.Lost(now)
		}
	}
	r.lossMu.Unlock()

	if len(lost) == 0 {
		return
	}
	r.reinject(lost)
}

// reinject announces the new epochs, then sends the batons again.
func (r *Relay) reinject(lost []Recovery) {
	var ann []byte
	for _, rec := range lost {
		r.table.Raise(rec.ID, rec.Next)
		ann = AppendEntry(ann, rec.ID, rec.Next)
	}
	r.ctl.Publish(ControlSubject, nil, ann)
	if err := r.ctl.Flush(); err != nil {
		r.log.Warn("cannot announce new baton epochs", "err", err)
	}

	for _, rec := range lost {
		r.lost.Add(1)
		r.ctrl.pass(baton{id: rec.ID, epoch: rec.Next.Epoch(), counter: rec.Next.Counter()})
		r.reinjected.Add(1)
	}
	r.flush()
	r.log.Info("batons made no progress; injected them again", "batons", len(lost),
		"first", lost[0].ID, "last_seen", lost[0].Last.String(), "again_at", lost[0].Next.String())
}
