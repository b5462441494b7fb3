package main

import (
	"context"
	"fmt"
	"io"
)

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "filterd list: not implemented yet")
	return exitFailure
}
