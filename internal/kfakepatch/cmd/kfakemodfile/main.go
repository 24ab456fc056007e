// Command kfakemodfile builds the patched kfake (see package kfakepatch) into -dir and prints the
// go.mod to use it with: go test -modfile "$(go run ./internal/kfakepatch/cmd/kfakemodfile)" ./...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/chatgroupd/chatgroupd/internal/kfakepatch"
)

func main() {
	dir := flag.String("dir", "bin/kfakepatch", "directory for the patched kfake and its go.mod")
	root := flag.String("C", ".", "the main module's directory")
	flag.Parse()
	path, err := kfakepatch.Write(context.Background(), *root, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakemodfile:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
