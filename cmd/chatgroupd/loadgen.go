package main

import (
	"context"
	"errors"
	"io"
)

func runLoadgen(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	return errors.New("loadgen: not implemented yet")
}
