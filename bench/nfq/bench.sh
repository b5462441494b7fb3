#!/usr/bin/env bash
# bench/nfq/bench.sh: NFQUEUE throughput on this machine (issue 7).
#
# Builds two throwaway namespaces, sender (198.18.0.1, s0) -> veth ->
# receiver (198.18.0.2, r0), and measures 60-byte UDP and SYN floods from
# bench/nfq/sender (bounded counts; SOURCES source addresses from
# 198.18.0.64 up, held by s0, used in turn, source ports cycling: 64,512
# flows; never a random or spoofed source), at full speed and paced, through:
#   kernel    the article's rule set (testdata/rules/server.rules) in the
#             receiver's own iptables, no NFQUEUE rule
#   gonfq     a bare github.com/florianl/go-nfqueue/v2 v2.1.0 accept-all loop
#             (bench/nfq/gonfq), one SetVerdict per packet
#   suricata  Suricata 7 in NFQ IPS mode (Debian bookworm-backports), mode
#             accept, batchcount 20, runmode workers, the article's rules
#             translated to Suricata rules (bench/nfq/suricata/)
#   filterd   the daemon, filterd run --driver batch --rules server.rules
#             --log none (the NFQUEUE rule is the script's, not --install)
#   filterd-gonfq  the same with --driver gonfqueue (the reference driver)
#   batch     engine/nfqbatch with the engine alone (bench/nfq/batch: no
#             QueueHandler, REJECT, LOG metadata or latency histogram)
# each NFQUEUE consumer with 1 queue (-j NFQUEUE --queue-num 0, consumer
# pinned to CPU 1) and 2 queues (--queue-balance 0:1, consumer unpinned).
# The sender is pinned to CPU 0. --queue-balance picks a flow's queue from a
# hash of its addresses and protocol only (not the ports): with one source
# address every packet of a flood would go to one queue, hence SOURCES
# (default 32) source addresses; the split between the queues is printed
# (the queue_drop/user_drop columns are sums, the consumers' summaries are
# per queue).
#
# "passed" counts packets that reached the receiver's UDP/TCP layer after
# the filter (Udp InDatagrams+NoPorts+InErrors, Tcp InSegs of
# /proc/net/snmp in the receiver namespace): they were accepted by the
# kernel's rules or verdicted ACCEPT by the consumer. The port-53 datagrams
# and port-80 SYNs are accepted by the rule set, so every packet lost was
# lost by the filter path (queue full, socket full, or never sent on). The
# rate is passed / (time of the last passed packet - sender start).
#
# Needs root, iproute2, iptables, taskset, go; installs suricata from
# bookworm-backports when it is missing. Never run by CI.
#
# Then TCP-session workloads (bench/nfq/tcpflows): rr, TCP_CONNS connections
# doing TCP_ROUNDS request/response rounds of 64 bytes each with an echo
# server on the receiver's port 80, and stream, TCP_STREAM_CONNS connections
# sending TCP_STREAM_MB MiB each to a sink on port 81, through TCP_CONFIGS:
# kernel (server.rules), filterd
# (--install --hooks INPUT,OUTPUT: both directions queued, 1 queue, pinned
# to CPU 1) and filterd-offload (the same with --offload established: a
# flow is handed to the kernel once filterd accepted one of its
# ESTABLISHED packets). TCP_CONFIGS= (empty) skips it.
#
# Knobs (environment): CONFIGS, PROTOS, RATES, FULL_COUNT, PACED_SECONDS, SOURCES,
# TCP_CONFIGS, TCP_CONNS, TCP_ROUNDS, TCP_STREAM_CONNS, TCP_STREAM_MB,
# FILTERD_ARGS (more filterd run options, e.g. "--metrics 127.0.0.1:9467
# --pprof" to profile the daemon inside the receiver namespace), FILTERD_BIN
# (a filterd binary to run instead of one built from this tree: A/B runs).
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then echo "bench.sh: needs root" >&2; exit 1; fi
if [[ ${CI:-} == true ]]; then echo "bench.sh: a benchmark, not for CI" >&2; exit 1; fi

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONFIGS=${CONFIGS-"kernel gonfq:1 gonfq:2 suricata:1 suricata:2 filterd:1 filterd:2 filterd-gonfq:1 filterd-gonfq:2"}
PROTOS=${PROTOS:-"udp syn"}
RATES=${RATES:-"full 20000 50000 100000 150000"}
FULL_COUNT=${FULL_COUNT:-600000}
PACED_SECONDS=${PACED_SECONDS:-2}
FILTERD_ARGS=${FILTERD_ARGS:-}
FILTERD_BIN=${FILTERD_BIN:-}
SOURCES=${SOURCES:-32}
TCP_CONFIGS=${TCP_CONFIGS-"kernel filterd filterd-offload"}
TCP_CONNS=${TCP_CONNS:-32}
TCP_ROUNDS=${TCP_ROUNDS:-5000}
TCP_STREAM_CONNS=${TCP_STREAM_CONNS:-4}
TCP_STREAM_MB=${TCP_STREAM_MB:-256}
if [[ ! $SOURCES =~ ^[0-9]+$ ]] || ((SOURCES < 1 || SOURCES > 128 || 64512 % SOURCES != 0)); then
	echo "bench.sh: SOURCES=$SOURCES: want 1..128, a divisor of 64512" >&2
	exit 1
fi
SND=nfqb-snd-$$
RCV=nfqb-rcv-$$
WORK=$(mktemp -d /tmp/nfqbench.XXXXXX)
BIN=$WORK/bin
CONSUMER_PID=
WATCH_PID=
SERVER_PID=

cleanup() {
	set +e
	[[ -n $CONSUMER_PID ]] && kill -TERM "$CONSUMER_PID" 2>/dev/null && wait "$CONSUMER_PID" 2>/dev/null
	[[ -n $WATCH_PID ]] && kill "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null
	[[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	ip netns del "$SND" 2>/dev/null
	ip netns del "$RCV" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

install_suricata() {
	if command -v suricata >/dev/null; then return; fi
	echo "# installing suricata from bookworm-backports" >&2
	cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports suricata >&2
}

setup_netns() {
	ip netns add "$SND"
	ip netns add "$RCV"
	ip link add s0 netns "$SND" type veth peer name r0 netns "$RCV"
	ip -n "$SND" link set s0 address 02:00:00:00:00:01
	ip -n "$RCV" link set r0 address 02:00:00:00:00:02
	for ns in "$SND" "$RCV"; do ip -n "$ns" link set lo up; done
	ip -n "$SND" link set s0 up
	ip -n "$RCV" link set r0 up
	ip -n "$SND" addr add 198.18.0.1/24 dev s0
	ip -n "$RCV" addr add 198.18.0.2/24 dev r0
	# Static neighbours: no ARP; no default route anywhere.
	ip -n "$SND" neigh replace 198.18.0.2 lladdr 02:00:00:00:00:02 dev s0 nud permanent
	ip -n "$RCV" neigh replace 198.18.0.1 lladdr 02:00:00:00:00:01 dev r0 nud permanent
	local i
	for ((i = 0; i < SOURCES; i++)); do
		ip -n "$SND" addr add "198.18.0.$((64 + i))/32" dev s0
		ip -n "$RCV" neigh replace "198.18.0.$((64 + i))" lladdr 02:00:00:00:00:01 dev r0 nud permanent
	done
	# A process that lives in the receiver namespace: its /proc/PID/net
	# is read without forking while a run is measured.
	ip netns exec "$RCV" sleep 1000000 &
	WATCH_PID=$!
	for _ in $(seq 100); do
		[[ -r /proc/$WATCH_PID/net/snmp && $(readlink /proc/$WATCH_PID/ns/net) != $(readlink /proc/self/ns/net) ]] && return
		sleep 0.05
	done
	echo "bench.sh: watcher did not enter $RCV" >&2
	exit 1
}

# passed_count PROTO: sets PASSED from the receiver's /proc/net/snmp (builtins only).
passed_count() {
	local -a h v
	local i sum=0
	while read -r -a h && read -r -a v; do
		if [[ $1 == udp && ${h[0]} == Udp: ]]; then
			for i in "${!h[@]}"; do
				case ${h[$i]} in InDatagrams | NoPorts | InErrors) sum=$((sum + v[i])) ;; esac
			done
		elif [[ $1 == syn && ${h[0]} == Tcp: ]]; then
			for i in "${!h[@]}"; do
				[[ ${h[$i]} == InSegs ]] && sum=$((sum + v[i]))
			done
		fi
	done <"/proc/$WATCH_PID/net/snmp"
	PASSED=$sum
}

# consumer_cpu: sets CPUNS, the CPU time in ns of every thread of the
# consumer so far (/proc/PID/task/*/schedstat; 0 without a consumer).
consumer_cpu() {
	local f t sum=0
	if [[ -n $CONSUMER_PID ]]; then
		for f in /proc/"$CONSUMER_PID"/task/*/schedstat; do
			read -r t _ <"$f" 2>/dev/null || continue
			sum=$((sum + t))
		done
	fi
	CPUNS=$sum
}

# queue_drops: sets QDROP and UDROP, summed over the bound queues, and
# QIN[queue], the packets that reached each queue (id_sequence, every packet
# given an id, + queue_dropped).
queue_drops() {
	local -a f
	QDROP=0 UDROP=0 QIN=()
	while read -r -a f; do
		[[ ${#f[@]} -ge 8 ]] || continue
		QDROP=$((QDROP + f[5])) UDROP=$((UDROP + f[6]))
		QIN[f[0]]=$((f[7] + f[5]))
	done <"/proc/$WATCH_PID/net/netfilter/nfnetlink_queue" 2>/dev/null || true
}

# queue_split BEFORE AFTER (names of QIN copies): percentages of the packets that
# reached each queue, e.g. 47/53; "-" for one queue or none.
queue_split() {
	local -n b=$1 a=$2
	local i tot=0 out=
	[[ ${#a[@]} -gt 1 ]] || { SPLIT=-; return; }
	for i in "${!a[@]}"; do tot=$((tot + a[i] - ${b[i]:-0})); done
	[[ $tot -gt 0 ]] || { SPLIT=-; return; }
	for i in "${!a[@]}"; do out+=${out:+/}$((100 * (a[i] - ${b[i]:-0}) / tot)); done
	SPLIT=$out
}

queues_bound() { # N: are N queues bound?
	local n=0 line
	[[ -r /proc/$WATCH_PID/net/netfilter/nfnetlink_queue ]] || return 1
	while read -r line; do n=$((n + 1)); done <"/proc/$WATCH_PID/net/netfilter/nfnetlink_queue"
	[[ $n -ge $1 ]]
}

exec {SLEEPFD}<> <(:)
nap() { read -r -t "$1" -u "$SLEEPFD" || true; }

rules_kernel() {
	ip netns exec "$RCV" iptables-restore <"$ROOT/testdata/rules/server.rules"
}

rules_nfqueue() { # QUEUES
	ip netns exec "$RCV" iptables -F INPUT
	ip netns exec "$RCV" iptables -F 2>/dev/null || true
	ip netns exec "$RCV" iptables -X 2>/dev/null || true
	if [[ $1 == 1 ]]; then
		ip netns exec "$RCV" iptables -A INPUT -i r0 -j NFQUEUE --queue-num 0
	else
		ip netns exec "$RCV" iptables -A INPUT -i r0 -j NFQUEUE --queue-balance 0:$(($1 - 1))
	fi
}

suricata_files() {
	mkdir -p "$WORK/suricata/log"
	cp "$ROOT/bench/nfq/suricata/article.rules" "$WORK/suricata/"
	sed "s#@DIR@#$WORK/suricata#g" "$ROOT/bench/nfq/suricata/suricata.yaml" >"$WORK/suricata/suricata.yaml"
}

start_consumer() { # NAME QUEUES [more filterd run options]
	local name=$1 q=$2 pin=(taskset -c 1) qs=0
	shift 2
	[[ $q -gt 1 ]] && pin=() && qs="0-$((q - 1))"
	case $name in
	gonfq) ip netns exec "$RCV" "${pin[@]}" "$BIN/gonfq" -queues "$qs" >"$WORK/consumer.log" 2>&1 & ;;
	filterd | filterd-gonfq | filterd-offload)
		local drv=batch
		[[ $name == filterd-gonfq ]] && drv=gonfqueue
		# shellcheck disable=SC2086 # FILTERD_ARGS is a list of options
		ip netns exec "$RCV" "${pin[@]}" "$BIN/filterd" run --driver "$drv" --rules "$ROOT/testdata/rules/server.rules" \
			--local 198.18.0.2 --log none --queues "$qs" "$@" $FILTERD_ARGS >"$WORK/consumer.log" 2>&1 &
		;;
	batch) ip netns exec "$RCV" "${pin[@]}" "$BIN/batch" -rules "$ROOT/testdata/rules/server.rules" -local 198.18.0.2 -queues "$qs" >"$WORK/consumer.log" 2>&1 & ;;
	suricata)
		local qargs=()
		for ((i = 0; i < q; i++)); do qargs+=(-q "$i"); done
		ip netns exec "$RCV" "${pin[@]}" suricata -c "$WORK/suricata/suricata.yaml" -k none --runmode workers "${qargs[@]}" \
			>"$WORK/consumer.log" 2>&1 &
		;;
	esac
	CONSUMER_PID=$!
	for _ in $(seq 1200); do
		if queues_bound "$q" && { [[ $name != filterd* ]] || grep -q 'filterd: ready' "$WORK/consumer.log"; }; then
			nap 1
			if grep -q '^Error' "$WORK/consumer.log"; then
				echo "bench.sh: $name reported errors:" >&2
				cat "$WORK/consumer.log" >&2
				exit 1
			fi
			return
		fi
		kill -0 "$CONSUMER_PID" 2>/dev/null || break
		nap 0.05
	done
	echo "bench.sh: $name did not bind $q queue(s):" >&2
	cat "$WORK/consumer.log" >&2
	exit 1
}

stop_consumer() {
	[[ -n $CONSUMER_PID ]] || return 0
	kill -TERM "$CONSUMER_PID" 2>/dev/null || true
	wait "$CONSUMER_PID" 2>/dev/null || true
	CONSUMER_PID=
	sed 's/^/#   /' "$WORK/consumer.log" | grep -Ei 'verdicts|queue [0-9]+:|queue summary|offload summary|drop' | tail -4 >&2 || true
}

# measure CONFIG QUEUES PROTO RATE: one run, one table row.
measure() {
	local cfg=$1 q=$2 proto=$3 rate=$4 count pps=0 dport=53
	[[ $proto == syn ]] && dport=80
	if [[ $rate == full ]]; then
		count=$FULL_COUNT
	else
		pps=$rate count=$((rate * PACED_SECONDS))
	fi
	passed_count "$proto"
	local base=$PASSED last=$PASSED
	queue_drops
	local qd0=$QDROP ud0=$UDROP
	local -a qin0=("${QIN[@]}")
	consumer_cpu
	local cpu0=$CPUNS
	local t0=$EPOCHREALTIME tlast=$EPOCHREALTIME
	ip netns exec "$SND" taskset -c 0 "$BIN/sender" -if s0 -dmac 02:00:00:00:00:02 -src 198.18.0.64 -srcs "$SOURCES" -dst 198.18.0.2 \
		-proto "$proto" -dport "$dport" -count "$count" -pps "$pps" >"$WORK/sender.log" 2>&1 &
	local spid=$! done=0
	while :; do
		nap 0.02
		passed_count "$proto"
		if [[ $PASSED != "$last" ]]; then last=$PASSED tlast=$EPOCHREALTIME; fi
		if [[ $done == 0 ]] && ! kill -0 "$spid" 2>/dev/null; then done=1; fi
		if [[ $done == 1 ]]; then
			# settled: nothing new for 0.5 s after the sender finished
			local idle
			idle=$(((${EPOCHREALTIME/./} - ${tlast/./}) / 1000))
			[[ $idle -ge 500 ]] && break
		fi
	done
	wait "$spid" || { cat "$WORK/sender.log" >&2; exit 1; }
	local sent offered
	read -r _ sent _ _ _ offered _ <"$WORK/sender.log"
	queue_drops
	queue_split qin0 QIN
	consumer_cpu
	local cpupp=- cpupct=-
	if [[ -n $CONSUMER_PID && $last -gt $base ]]; then
		cpupp=$(awk -v c=$((CPUNS - cpu0)) -v p=$((last - base)) 'BEGIN { printf "%.2f", c / p / 1000 }')
		cpupct=$(((CPUNS - cpu0) / 10 / (${tlast/./} - ${t0/./} + 1)))
	fi
	local passed=$((last - base)) el_us=$((${tlast/./} - ${t0/./}))
	[[ $el_us -gt 0 ]] || el_us=1
	local vpps=$((passed * 1000000 / el_us))
	local loss
	loss=$(awk -v s="$sent" -v p="$passed" 'BEGIN { printf "%.2f", (s > 0) ? 100 * (s - p) / s : 0 }')
	printf "%-13s %6s %4s %9s %10s %9s %9s %14s %7s %10s %10s %6s %10s %4s\n" "$cfg" "$q" "$proto" "$rate" "$offered" "$sent" "$passed" \
		"$vpps" "$loss" "$((QDROP - qd0))" "$((UDROP - ud0))" "$SPLIT" "$cpupp" "$cpupct"
}

# measure_tcp CONFIG QUEUES WORKLOAD: one TCP-session run with
# bench/nfq/tcpflows from 198.18.0.1 to 198.18.0.2, one row. WORKLOAD rr:
# TCP_CONNS connections to the echo server (port 80), TCP_ROUNDS 64-byte
# requests each, every one answered before the next (rate: transactions
# per second); stream: TCP_STREAM_CONNS connections to the sink (port 81)
# sending TCP_STREAM_MB MiB each (rate: MB/s). tcp_segs_in: segments the
# receiver's TCP took in (a GRO/GSO packet counts once); queued: packets
# that reached the queue (id_sequence + queue_dropped), both directions.
measure_tcp() {
	local cfg=$1 q=$2 wl=$3 args conns
	if [[ $wl == rr ]]; then
		conns=$TCP_CONNS args=(-connect 198.18.0.2:80 -conns "$TCP_CONNS" -rounds "$TCP_ROUNDS" -size 64)
	else
		conns=$TCP_STREAM_CONNS args=(-connect 198.18.0.2:81 -conns "$TCP_STREAM_CONNS" -stream $((TCP_STREAM_MB << 20)))
	fi
	passed_count syn
	local base=$PASSED
	queue_drops
	local -a qin0=("${QIN[@]}")
	consumer_cpu
	local cpu0=$CPUNS
	if ! ip netns exec "$SND" taskset -c 0 "$BIN/tcpflows" "${args[@]}" >"$WORK/tcp.log" 2>&1; then
		cat "$WORK/tcp.log" >&2
		exit 1
	fi
	passed_count syn
	queue_drops
	consumer_cpu
	local amount el rate unit i queued=0 cpupct=-
	read -r _ amount _ el _ rate unit _ <"$WORK/tcp.log"
	[[ $wl == rr ]] && unit=trans/s
	for i in "${!QIN[@]}"; do queued=$((queued + QIN[i] - ${qin0[i]:-0})); done
	if [[ -n $CONSUMER_PID ]]; then
		cpupct=$(awk -v c=$((CPUNS - cpu0)) -v e="${el%s}" 'BEGIN { printf "%.0f", c / e / 1e7 }')
	fi
	printf "%-15s %6s %6s %5s %11s %9s %9s %-7s %11s %10s %4s\n" "$cfg" "$q" "$wl" "$conns" "$amount" "$el" "$rate" "$unit" \
		"$((PASSED - base))" "$queued" "$cpupct"
}

tcp_section() {
	echo
	echo "# TCP sessions: rr = $TCP_CONNS connections x $TCP_ROUNDS request/response rounds of 64 bytes;" \
		"stream = $TCP_STREAM_CONNS connections x $TCP_STREAM_MB MiB"
	printf "%-15s %6s %6s %5s %11s %9s %9s %-7s %11s %10s %4s\n" config queues work conns amount elapsed rate unit \
		tcp_segs_in queued cpu%
	ip netns exec "$RCV" "$BIN/tcpflows" -listen 198.18.0.2:80 -sink 198.18.0.2:81 >"$WORK/server.log" 2>&1 &
	SERVER_PID=$!
	local c wl
	for c in $TCP_CONFIGS; do
		ip netns exec "$RCV" iptables -F
		ip netns exec "$RCV" iptables -X
		case $c in
		kernel) rules_kernel ;;
		filterd) start_consumer filterd 1 --install --hooks INPUT,OUTPUT ;;
		filterd-offload) start_consumer filterd-offload 1 --install --hooks INPUT,OUTPUT --offload established ;;
		*)
			echo "bench.sh: TCP_CONFIGS: unknown $c (kernel, filterd, filterd-offload)" >&2
			exit 1
			;;
		esac
		local q=1
		[[ $c == kernel ]] && q=-
		for wl in rr stream; do
			measure_tcp "$c" "$q" "$wl"
		done
		stop_consumer
	done
	kill "$SERVER_PID" 2>/dev/null
	wait "$SERVER_PID" 2>/dev/null || true # killed: status 143
	SERVER_PID=
}

main() {
	echo "# building the Go programs" >&2
	(cd "$ROOT" && go build -o "$BIN/" ./bench/nfq/sender ./bench/nfq/gonfq ./bench/nfq/batch ./bench/nfq/tcpflows ./cmd/filterd)
	if [[ -n $FILTERD_BIN ]]; then cp "$FILTERD_BIN" "$BIN/filterd"; fi
	if [[ $CONFIGS == *suricata* ]]; then
		install_suricata
		suricata_files
	fi
	setup_netns
	echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	command -v suricata >/dev/null && echo "# $(suricata -V 2>/dev/null | head -1)"
	printf "%-13s %6s %4s %9s %10s %9s %9s %14s %7s %10s %10s %6s %10s %4s\n" config queues pkt rate offered_pps sent passed \
		verdicted_pps loss% queue_drop user_drop split cpu_us/pkt cpu%
	for c in $CONFIGS; do
		local name=${c%%:*} q=${c#*:}
		[[ $c == kernel ]] && q=-
		if [[ $name == kernel ]]; then
			rules_kernel
		else
			rules_nfqueue "$q"
			start_consumer "$name" "$q"
		fi
		for proto in $PROTOS; do
			for rate in $RATES; do
				measure "$name" "$q" "$proto" "$rate"
			done
		done
		stop_consumer
	done
	[[ -n $TCP_CONFIGS ]] && tcp_section
	return 0
}

main "$@"
