package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// newFlagSet returns a FlagSet for a subcommand whose usage goes to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("chatgroupd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// envName maps a flag name to its environment variable: --rate-limit → CHATGROUPD_RATE_LIMIT.
func envName(flagName string) string {
	return "CHATGROUPD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line from its
// CHATGROUPD_* environment variable. Flags win over the environment.
func parseFlags(fs *flag.FlagSet, args []string, getenv env) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
			}
		}
	})
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	return errors.Join(errs...)
}

// secretKey reads the IM secret key from CHATGROUPD_SECRET_KEY or the file named by
// --secret-key-file; never from a flag value, so it stays out of process listings.
func secretKey(file string, getenv env) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("secret key file: %w", err)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("secret key file %s is empty", file)
		}
		return k, nil
	}
	if k := getenv("CHATGROUPD_SECRET_KEY"); k != "" {
		return k, nil
	}
	return "", errors.New("no secret key: set CHATGROUPD_SECRET_KEY or --secret-key-file")
}
