package main

import (
	"context"
	"errors"
	"io"
)

func runIMSim(ctx context.Context, args []string, getenv env, stdout, stderr io.Writer) error {
	return errors.New("imsim: not implemented yet")
}
