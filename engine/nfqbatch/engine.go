package nfqbatch

import "github.com/filterd/filterd/engine"

// EngineHandler returns a Handler that runs every packet through the engine
// worker w (one worker per queue: a Handler is called from one goroutine).
// Accept is accepted; Drop, Reject and a fragment the engine holds are
// dropped (the kernel hands NFQUEUE reassembled datagrams, so Held is not
// expected; sending the REJECT reply is the daemon's job).
func EngineHandler(w *engine.Worker) Handler {
	return func(pkts []Packet, vs []Verdict) {
		var v engine.Verdict
		for i := range pkts {
			if w.ProcessTo(pkts[i].L3, &pkts[i].Meta, &v); v.Action != engine.Accept {
				vs[i].Action = Drop
			}
		}
	}
}
