package main

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/filterd/filterd/engine"
)

// procState returns the state letter of process pid (/proc/PID/stat: R, S,
// T for stopped ...).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return s[i+2 : i+3]
}

// TestKernelRunBurst drives a burst larger than the queue through filterd
// run (--max-queue-len 64): filterd is stopped (SIGSTOP, by PID) while 2000
// UDP datagrams arrive, so the kernel queues 64 and drops the rest for a
// full queue; once resumed (SIGCONT) it verdicts what waits. The kernel's
// counters (/proc/net/netfilter/nfnetlink_queue) and filterd's (its exit
// summary, logged after the rules are removed and the queue drained, while
// it is still bound) must account for every datagram: each was either
// verdicted exactly once by filterd or counted as dropped by the kernel.
func TestKernelRunBurst(t *testing.T) { forDrivers(t, testKernelRunBurst) }

func testKernelRunBurst(t *testing.T, driver string) {
	const (
		queueLen = 64
		burst    = 2000
	)
	l := newLab(t)
	l.driver = driver
	// A receiver on the server's DNS port (accepted by the rules): it
	// answers nothing, so only the burst is queued.
	var rcv *net.UDPConn
	if err := l.server.Do(func() error {
		var err error
		rcv, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(serverIP), Port: 53})
		if err == nil {
			err = rcv.SetReadBuffer(4 << 20)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	var received atomic.Int64
	go func() {
		var b [2048]byte
		for {
			if _, _, err := rcv.ReadFromUDP(b[:]); err != nil {
				return
			}
			received.Add(1)
		}
	}()

	d := l.startFilterd(rulesPath(t, "server-state.rules"), "--max-queue-len", strconv.Itoa(queueLen))
	defer d.stop()
	pid := d.cmd.Process.Pid

	kq := func() engine.QueueProc {
		t.Helper()
		var qs []engine.QueueProc
		if err := l.server.Do(func() error {
			var err error
			qs, err = engine.ReadQueueProc("/proc/thread-self/net/netfilter/nfnetlink_queue")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			if q.Queue == 0 {
				return q
			}
		}
		t.Fatalf("queue 0 not bound in the server namespace: %+v", qs)
		return engine.QueueProc{}
	}
	k0 := kq()
	if k0.Waiting != 0 || k0.PortID == 0 {
		t.Fatalf("before the burst: %+v, want the queue bound (by filterd, pid %d) and nothing waiting", k0, pid)
	}

	// Stop filterd (this test's child, by PID) and wait until the kernel
	// says it is stopped.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	cont := func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
			stopped = false
		}
	}
	defer cont()
	waitFor(t, 10*time.Second, "filterd stopped", func() bool { return procState(t, pid) == "T" })

	// The burst, from the client: a bounded loop of 2000 datagrams.
	sent := 0
	if err := l.client.Do(func() error {
		c, err := net.Dial("udp", serverIP+":53")
		if err != nil {
			return err
		}
		defer c.Close()
		msg := make([]byte, 32)
		for i := 0; i < burst; i++ {
			msg[0], msg[1] = byte(i>>8), byte(i)
			if _, err := c.Write(msg); err == nil {
				sent++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if sent != burst {
		t.Fatalf("%d of %d datagrams sent", sent, burst)
	}
	// Every datagram reached the queue: queued (an id) or dropped for a
	// full queue.
	var k1 engine.QueueProc
	waitFor(t, 10*time.Second, "the burst at the queue", func() bool {
		k1 = kq()
		return int(k1.IDSequence+uint32(k1.Dropped)-k0.IDSequence-uint32(k0.Dropped)) == sent
	})
	if k1.Waiting != queueLen {
		t.Errorf("while filterd is stopped: %d packets waiting, want the queue length %d (%+v)", k1.Waiting, queueLen, k1)
	}
	if procState(t, pid) != "T" {
		t.Fatal("filterd is no longer stopped")
	}

	cont()
	var k2 engine.QueueProc
	waitFor(t, 20*time.Second, "the queue empty", func() bool {
		k2 = kq()
		return k2.Waiting == 0
	})
	waitFor(t, 10*time.Second, "the accepted datagrams at the receiver", func() bool {
		return received.Load() >= int64(k2.IDSequence-k0.IDSequence-uint32(k2.UserDropped-k0.UserDropped))
	})

	d.stop()
	out := d.out.String()
	re := regexp.MustCompile(`msg="filterd: queue summary" queue=0 verdicted=(\d+) offloaded=\d+ kernel_id_sequence=(\d+) kernel_queue_dropped=(\d+) kernel_user_dropped=(\d+) kernel_waiting=(\d+)`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no queue summary on exit:\n%s", out)
	}
	num := func(s string) uint64 {
		n, _ := strconv.ParseUint(s, 10, 64)
		return n
	}
	verdicted, exitID, exitQD, exitUD, exitWaiting := num(m[1]), num(m[2]), num(m[3]), num(m[4]), num(m[5])
	// Nothing was queued after our last reading: filterd's view of the
	// kernel's counters at exit is the test's.
	if exitID != uint64(k2.IDSequence) || exitQD != k2.Dropped || exitUD != k2.UserDropped || exitWaiting != 0 {
		t.Errorf("kernel counters at filterd's exit: id_sequence %d queue_dropped %d user_dropped %d waiting %d; the test read %+v",
			exitID, exitQD, exitUD, exitWaiting, k2)
	}
	// Filterd verdicted every packet the kernel delivered to it, once.
	delivered := uint64(k2.IDSequence) - k2.UserDropped
	if verdicted != delivered {
		t.Errorf("filterd verdicted %d packets; the kernel delivered %d (id_sequence %d - user_dropped %d)",
			verdicted, delivered, k2.IDSequence, k2.UserDropped)
	}
	// The burst: sent == verdicted + queue_dropped + user_dropped.
	bVerdicted := verdicted - (uint64(k0.IDSequence) - k0.UserDropped)
	bQD, bUD := k2.Dropped-k0.Dropped, k2.UserDropped-k0.UserDropped
	t.Logf("%s: sent %d, filterd verdicted %d, kernel queue_dropped %d, user_dropped %d (id_sequence %d -> %d), receiver got %d",
		driver, sent, bVerdicted, bQD, bUD, k0.IDSequence, k2.IDSequence, received.Load())
	if uint64(sent) != bVerdicted+bQD+bUD {
		t.Errorf("sent %d != verdicted %d + queue_dropped %d + user_dropped %d", sent, bVerdicted, bQD, bUD)
	}
	if bQD == 0 {
		t.Errorf("queue_dropped did not grow: the burst did not overflow the queue")
	}
	if bVerdicted < queueLen {
		t.Errorf("filterd verdicted %d packets of the burst, want at least the %d that waited", bVerdicted, queueLen)
	}
	// Every verdicted datagram was accepted (UDP to 53) and delivered.
	if got := received.Load(); got != int64(bVerdicted) {
		t.Errorf("the receiver got %d datagrams, filterd verdicted %d (all accepted)", got, bVerdicted)
	}
}
