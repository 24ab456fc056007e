//go:build !unix

package main

import "io"

// ttyColumns is 0 where the terminal can't be asked: terminalWidth falls back to $COLUMNS.
func ttyColumns(io.Writer) int { return 0 }
