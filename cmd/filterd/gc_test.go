package main

import (
	"strings"
	"testing"
)

func TestBatchGC(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		memTotal  int64
		wantLimit int64
		wantOK    bool
	}{
		{"half of memory", nil, 24 << 30, 12 << 30, true},
		{"memory unknown", nil, 0, 1 << 30, true},
		{"GOGC set", map[string]string{"GOGC": "100"}, 24 << 30, 0, false},
		{"GOGC=off set", map[string]string{"GOGC": "off"}, 24 << 30, 0, false},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "512MiB"}, 24 << 30, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, ok := batchGC(func(k string) string { return tc.env[k] }, tc.memTotal)
			if limit != tc.wantLimit || ok != tc.wantOK {
				t.Fatalf("batchGC = %d, %v; want %d, %v", limit, ok, tc.wantLimit, tc.wantOK)
			}
		})
	}
}

func TestParseMemTotal(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int64
	}{
		{"meminfo", "MemTotal:       24683772 kB\nMemFree:        24177484 kB\n", 24683772 << 10},
		{"second line", "Foo: 1 kB\nMemTotal: 2048 kB\n", 2048 << 10},
		{"missing", "MemFree: 1 kB\n", 0},
		{"no unit", "MemTotal: 2048\n", 0},
		{"not a number", "MemTotal: lots kB\n", 0},
		{"empty", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseMemTotal(strings.NewReader(tc.in)); got != tc.want {
				t.Fatalf("parseMemTotal = %d, want %d", got, tc.want)
			}
		})
	}
}
