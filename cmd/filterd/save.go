package main

import (
	"context"
	"fmt"
	"io"
)

func runSave(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "filterd save: not implemented yet")
	return exitFailure
}
