#!/bin/sh
# pgo.sh regenerates cmd/filterd/default.pgo, the CPU profile that `go build`
# uses for profile-guided optimisation of the filterd binary (-pgo=auto picks
# a main package's default.pgo). The profile is taken from the work filterd
# is built for: a replay of a generated SYN flood (1,000,000 SYNs from 50,000
# sources plus 20 HTTP sessions) with the article's rules, and the engine
# benchmarks (established flows, new flows, real captures, replay end to
# end). Binaries are built without PGO, so the profile does not depend on the
# previous one. No root needed; about a minute.
#
# Benchmarks measure the code as the filterd binary is built when given the
# same profile: go test -pgo="$PWD/cmd/filterd/default.pgo" -bench ... ./bench/
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -pgo=off -o "$tmp/filterd" ./cmd/filterd
"$tmp/filterd" gen -o "$tmp/flood.pcap" --syns 1000000 --sources 50000 --rate 200000 --sessions 20 --seed 3 >/dev/null
"$tmp/filterd" replay --rules testdata/rules/server.rules --local 198.18.2.2 --cpuprofile "$tmp/replay.prof" "$tmp/flood.pcap" >/dev/null
go test -pgo=off -run '^$' -bench 'EngineEstablished|EngineNewFlow|EnginePcap|ReplayEndToEnd/server.rules' \
	-benchtime 1s -cpu 1 -cpuprofile "$tmp/bench.prof" -o "$tmp/bench.test" ./bench/ >/dev/null
go tool pprof -proto "$tmp/replay.prof" "$tmp/bench.prof" >"$tmp/default.pgo"
mv "$tmp/default.pgo" cmd/filterd/default.pgo
echo "wrote cmd/filterd/default.pgo ($(wc -c <cmd/filterd/default.pgo) bytes)"
