package main

import (
	"context"
	"errors"
	"io"
)

func runDemo(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	return errors.New("demo: not implemented yet")
}
