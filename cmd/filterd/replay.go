package main

import (
	"context"
	"fmt"
	"io"
)

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "filterd replay: not implemented yet")
	return exitFailure
}
