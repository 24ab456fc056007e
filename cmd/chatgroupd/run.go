package main

import (
	"context"
	"errors"
	"io"
)

func runService(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	return errors.New("run: not implemented yet")
}
