package main

import (
	"context"
	"fmt"
	"io"
)

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "filterd run: not implemented yet")
	return exitFailure
}
