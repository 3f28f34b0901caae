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
	c, err := r.handshake(dial, "-relay-control", func(c *natsproto.Conn) error {
		if err := c.Subscribe(ProgressPrefix+"*", sidProgress); err != nil {
			return fmt.Errorf("subscribe %s*: %w", ProgressPrefix, err)
		}
		if err := c.Subscribe(ControlSubject, sidControl); err != nil {
			return fmt.Errorf("subscribe %s: %w", ControlSubject, err)
		}
		return nil
	})
	if err != nil {
		return err
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
			r.establish(id, p.Epoch())
		})
		r.lossMu.Unlock()
	case string(m.Subject) == ControlSubject:
		// An epoch announcement: from now on, copies of older epochs of
		// these batons die here, and copies of this epoch are taken.
		err = ParseReport(m.Data, func(id uint32, p Position) {
			r.establish(id, p.Epoch())
			r.table.Raise(id, p)
		})
	}
	if err != nil {
		r.countBad("bad control message", err)
	}
}

// establish records that epoch of baton id is established, and wakes the
// control goroutine if a copy of it may be held.
func (r *Relay) establish(id uint32, epoch uint16) {
	if !r.epochs.raise(id, uint32(epoch)) {
		return
	}
	r.heldMu.Lock()
	waiting := len(r.held) > 0
	r.heldMu.Unlock()
	if waiting {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Held batons.
//
// The leader announces a new epoch on baton.control before it sends the
// baton again, but the two travel different paths (the announcement over
// routes, the baton straight to the peer's server), so the baton may
// arrive first. A node that has just started knows no epoch at all until
// a full progress report reaches it. And a copy with a made-up epoch
// would, if taken, fence the real baton and restart its counter. So a
// copy of an epoch not yet established here is held, not relayed: it
// goes on once the epoch is established, and is dropped as unannounced
// if that does not happen within the loss timeout (a real baton dropped
// that way is found lost and injected again).

type heldBaton struct {
	b     baton
	since time.Time
}

// maxHeld bounds the held list, so a flood of forged batons costs
// memory only up to this.
const maxHeld = 4096

func (r *Relay) hold(b baton) {
	r.heldMu.Lock()
	full := len(r.held) >= maxHeld
	if !full {
		r.held = append(r.held, heldBaton{b: b, since: time.Now()})
	}
	r.heldMu.Unlock()
	if full {
		r.unannounced.Add(1)
		return
	}
	// The epoch may have been established between the check and now.
	if uint32(b.epoch) <= r.epochs.get(b.id) {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// releaseHeld passes on the held batons whose epoch is now established
// and drops those held past the loss timeout. It runs on the control
// goroutine.
func (r *Relay) releaseHeld(now time.Time) {
	r.heldMu.Lock()
	if len(r.held) == 0 {
		r.heldMu.Unlock()
		return
	}
	var ready []baton
	var expired int
	keep := r.held[:0]
	for _, h := range r.held {
		switch {
		case uint32(h.b.epoch) <= r.epochs.get(h.b.id):
			ready = append(ready, h.b)
		case now.Sub(h.since) >= max(r.cfg.LossTimeout, time.Second):
			expired++
		default:
			keep = append(keep, h)
		}
	}
	clear(r.held[len(keep):])
	r.held = keep
	r.heldMu.Unlock()

	if expired > 0 {
		r.unannounced.Add(uint64(expired))
		r.log.Warn("dropped batons of an epoch never announced (forged, or an announcement lost)", "batons", expired)
	}
	passed := 0
	for _, b := range ready {
		p := Pos(b.epoch, b.counter)
		if known := r.table.Raise(b.id, p); known > p {
			if known.Epoch() > b.epoch {
				r.fenced.Add(1)
			} else {
				r.duplicates.Add(1)
			}
			continue
		}
		r.seen.Store(true)
		r.ctrl.pass(baton{id: b.id, epoch: b.epoch, counter: b.counter + 1})
		r.hops.Add(1)
		passed++
	}
	if passed > 0 {
		r.flush()
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
		r.epochs.raise(rec.ID, uint32(rec.Next.Epoch()))
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
