package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Every flag of every command is declared with the values it accepts (intFlag, floatFlag,
// durationFlag, stringFlag, boolFlag): the check runs in the flag's Set, so a value from the
// command line and one from CHATGROUPD_* are refused alike, before anything starts, with one line
// naming the flag and its range. A flag registered with the flag package's plain IntVar & co.
// has no range; TestEveryFlagRejectsBadValues fails on it.

// ranged is what every declared flag value tells help and the flag table test.
type ranged interface {
	flag.Value
	// allowed describes the accepted values, e.g. "an integer from 1 to 100000".
	allowed() string
	// typeName is the word help shows after the flag: int, float, duration, string or "".
	typeName() string
	// defaultText is the default as help shows it ("" when it is the zero value).
	defaultText() string
}

type intValue struct {
	p        *int64
	set      func(int64)
	lo, hi   int64
	def      int64
	zeroNote string // allowed text addition, e.g. "0 = no limit"
}

func (v *intValue) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	return strconv.FormatInt(*v.p, 10)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, 64)
	if err != nil || n < v.lo || n > v.hi {
		return errors.New("want " + v.allowed())
	}
	*v.p = n
	if v.set != nil {
		v.set(n)
	}
	return nil
}

func (v *intValue) allowed() string {
	s := fmt.Sprintf("an integer from %d to %d", v.lo, v.hi)
	if v.zeroNote != "" {
		s += " (" + v.zeroNote + ")"
	}
	return s
}
func (v *intValue) typeName() string { return "int" }
func (v *intValue) defaultText() string {
	if v.def == 0 {
		return ""
	}
	return strconv.FormatInt(v.def, 10)
}

// intFlag declares an int flag accepting lo..hi.
func intFlag(fs *flag.FlagSet, p *int, name string, def, lo, hi int, usage string) *intValue {
	*p = def
	v := &intValue{p: new(int64), lo: int64(lo), hi: int64(hi), def: int64(def)}
	*v.p = int64(def)
	v.set = func(n int64) { *p = int(n) }
	fs.Var(v, name, usage)
	return v
}

// int64Flag declares an int64 flag accepting lo..hi.
func int64Flag(fs *flag.FlagSet, p *int64, name string, def, lo, hi int64, usage string) *intValue {
	*p = def
	v := &intValue{p: p, lo: lo, hi: hi, def: def}
	fs.Var(v, name, usage)
	return v
}

// seedFlag declares a uint64 random seed (any value; 0 picks one from the clock).
func seedFlag(fs *flag.FlagSet, p *uint64, usage string) {
	fs.Var(&uintValue{p: p}, "seed", usage)
}

type uintValue struct{ p *uint64 }

func (v *uintValue) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	return strconv.FormatUint(*v.p, 10)
}
func (v *uintValue) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 0, 64)
	if err != nil {
		return errors.New("want " + v.allowed())
	}
	*v.p = n
	return nil
}
func (v *uintValue) allowed() string     { return "an integer from 0 to 18446744073709551615" }
func (v *uintValue) typeName() string    { return "uint" }
func (v *uintValue) defaultText() string { return "" }

type floatValue struct {
	p      *float64
	lo, hi float64
	def    float64
	note   string
}

func (v *floatValue) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	return strconv.FormatFloat(*v.p, 'g', -1, 64)
}
func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || f < v.lo || f > v.hi {
		return errors.New("want " + v.allowed())
	}
	*v.p = f
	return nil
}
func (v *floatValue) allowed() string {
	s := fmt.Sprintf("a number from %s to %s", strconv.FormatFloat(v.lo, 'g', -1, 64), strconv.FormatFloat(v.hi, 'g', -1, 64))
	if v.note != "" {
		s += " (" + v.note + ")"
	}
	return s
}
func (v *floatValue) typeName() string { return "float" }
func (v *floatValue) defaultText() string {
	if v.def == 0 {
		return ""
	}
	return strconv.FormatFloat(v.def, 'g', -1, 64)
}

// floatFlag declares a float flag accepting lo..hi (never NaN or ±Inf).
func floatFlag(fs *flag.FlagSet, p *float64, name string, def, lo, hi float64, usage string) *floatValue {
	*p = def
	v := &floatValue{p: p, lo: lo, hi: hi, def: def}
	fs.Var(v, name, usage)
	return v
}

type durationValue struct {
	p      *time.Duration
	lo, hi time.Duration
	def    time.Duration
	note   string
}

func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return "0s"
	}
	return v.p.String()
}
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < v.lo || d > v.hi {
		return errors.New("want " + v.allowed())
	}
	*v.p = d
	return nil
}
func (v *durationValue) allowed() string {
	s := fmt.Sprintf("a duration from %v to %v", v.lo, v.hi)
	if v.note != "" {
		s += " (" + v.note + ")"
	}
	return s
}
func (v *durationValue) typeName() string { return "duration" }
func (v *durationValue) defaultText() string {
	if v.def == 0 {
		return ""
	}
	return v.def.String()
}

// durationFlag declares a duration flag accepting lo..hi.
func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, def, lo, hi time.Duration, usage string) *durationValue {
	*p = def
	v := &durationValue{p: p, lo: lo, hi: hi, def: def}
	fs.Var(v, name, usage)
	return v
}

// stringKind says what a string flag holds; the flag table test knows a bad value of each.
type stringKind int

const (
	anyString    stringKind = iota // free text (a path, a filter, a name)
	nonEmpty                       // free text, not empty
	oneOf                          // one of a fixed set (case-insensitive)
	hostPort                       // a listen address host:port (host may be empty)
	hostPortList                   // comma-separated host:port, each with a host
	topicName                      // a Kafka topic name (empty allowed only when the default is empty)
	checked                        // free form checked by a parser of its own (stringValue.check)
)

type stringValue struct {
	p       *string
	kind    stringKind
	choices []string
	def     string
	check   func(string) error
	desc    string
}

func (v *stringValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return *v.p
}

var topicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func (v *stringValue) Set(s string) error {
	bad := errors.New("want " + v.allowed())
	switch v.kind {
	case nonEmpty:
		if strings.TrimSpace(s) == "" {
			return bad
		}
	case oneOf:
		ok := false
		for _, c := range v.choices {
			if strings.EqualFold(s, c) {
				s, ok = c, true
			}
		}
		if !ok {
			return bad
		}
	case hostPort:
		if _, port, err := net.SplitHostPort(s); err != nil || !validPort(port) {
			return bad
		}
	case hostPortList:
		items := splitList(s)
		if len(items) == 0 && s != "" {
			return bad
		}
		for _, it := range items {
			host, port, err := net.SplitHostPort(it)
			if err != nil || host == "" || !validPort(port) {
				return bad
			}
		}
	case topicName:
		if !(s == "" && v.def == "") && (!topicRE.MatchString(s) || s == "." || s == "..") {
			return bad
		}
	case checked:
		if err := v.check(s); err != nil {
			return fmt.Errorf("want %s: %w", v.allowed(), err)
		}
	}
	*v.p = s
	return nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func (v *stringValue) allowed() string {
	switch v.kind {
	case nonEmpty:
		return "a non-empty value"
	case oneOf:
		return "one of " + strings.Join(v.choices, ", ")
	case hostPort:
		return "a listen address host:port"
	case hostPortList:
		return "comma-separated host:port"
	case topicName:
		return "a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
	case checked:
		return v.desc
	}
	return "any text"
}
func (v *stringValue) typeName() string { return "string" }
func (v *stringValue) defaultText() string {
	if v.def == "" {
		return ""
	}
	return strconv.Quote(v.def)
}

// stringFlag declares a string flag of the given kind; choices are oneOf's values.
func stringFlag(fs *flag.FlagSet, p *string, name, def string, kind stringKind, usage string, choices ...string) *stringValue {
	*p = def
	v := &stringValue{p: p, kind: kind, choices: choices, def: def}
	fs.Var(v, name, usage)
	return v
}

// checkedFlag declares a string flag whose value check parses it (a list of codes, a time).
func checkedFlag(fs *flag.FlagSet, p *string, name, def, desc string, check func(string) error, usage string) *stringValue {
	*p = def
	v := &stringValue{p: p, kind: checked, def: def, check: check, desc: desc}
	fs.Var(v, name, usage)
	return v
}

type boolValue struct {
	p   *bool
	def bool
}

func (v *boolValue) String() string {
	if v == nil || v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return errors.New("want " + v.allowed())
	}
	*v.p = b
	return nil
}
func (v *boolValue) IsBoolFlag() bool    { return true }
func (v *boolValue) allowed() string     { return "true or false" }
func (v *boolValue) typeName() string    { return "" }
func (v *boolValue) defaultText() string { return "" }

// boolFlag declares a boolean flag.
func boolFlag(fs *flag.FlagSet, p *bool, name string, def bool, usage string) {
	*p = def
	fs.Var(&boolValue{p: p, def: def}, name, usage)
}

// help is what `chatgroupd <command> --help` prints besides the flags.
type help struct {
	usage   string   // the command line, e.g. "chatgroupd run [flags]"
	about   string   // what the command does, a paragraph
	env     []string // environment variables besides the flags', "NAME  what"
	example []string // command lines
}

// newFlagSet returns the FlagSet of a subcommand. Parsing errors are not printed by the flag
// package (no usage dump after a bad value): parseFlags turns them into one line.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("chatgroupd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// printHelp writes a command's help: what it does, its flags with their ranges and defaults, the
// environment, an example.
func printHelp(w io.Writer, fs *flag.FlagSet, h help) {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n%s\n", h.usage, strings.TrimSpace(h.about))
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		b.WriteString("\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			typ, def, allowed := "value", "", ""
			if r, ok := f.Value.(ranged); ok {
				typ, def, allowed = r.typeName(), r.defaultText(), r.allowed()
			} else if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				typ = ""
			}
			b.WriteString("  --" + f.Name)
			if typ != "" {
				b.WriteString(" " + typ)
			}
			b.WriteString("\n    \t" + f.Usage)
			if def != "" {
				b.WriteString(" (default " + def + ")")
			}
			b.WriteString("\n")
			if allowed != "" && typ != "" && typ != "string" {
				b.WriteString("    \t  accepts " + allowed + "\n")
			} else if r, ok := f.Value.(*stringValue); ok && r.kind == oneOf {
				b.WriteString("    \t  accepts " + allowed + "\n")
			}
		})
	}
	b.WriteString("\nEnvironment:\n  Every flag --foo-bar may also be set as CHATGROUPD_FOO_BAR; a flag on the command line wins.\n")
	for _, e := range h.env {
		b.WriteString("  " + e + "\n")
	}
	if len(h.example) > 0 {
		b.WriteString("\nExample:\n")
		for _, e := range h.example {
			b.WriteString("  " + e + "\n")
		}
	}
	io.WriteString(w, b.String())
}

// envName maps a flag name to its environment variable: --rate-limit → CHATGROUPD_RATE_LIMIT.
func envName(flagName string) string {
	return "CHATGROUPD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// usageError is a bad command line: exit status 2, one line, a pointer to --help.
func usageError(cmd string, err error) error {
	return &exitError{code: 2, err: fmt.Errorf("%s: %w; see 'chatgroupd %s --help'", cmd, err, cmd)}
}

var (
	invalidValueRE = regexp.MustCompile(`^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-(\S+): (.*)$`)
	undefinedRE    = regexp.MustCompile(`^flag provided but not defined: -+(\S+)$`)
	needsArgRE     = regexp.MustCompile(`^flag needs an argument: -+(\S+)$`)
)

// flagError rewrites the flag package's parse errors to name the flag as users type it.
func flagError(err error) error {
	s := err.Error()
	if m := invalidValueRE.FindStringSubmatch(s); m != nil {
		msg := m[3]
		if msg == "parse error" {
			msg = "want true or false"
		}
		return fmt.Errorf("--%s %s: %s", m[2], m[1], msg)
	}
	if m := undefinedRE.FindStringSubmatch(s); m != nil {
		return fmt.Errorf("unknown flag --%s", m[1])
	}
	if m := needsArgRE.FindStringSubmatch(s); m != nil {
		return fmt.Errorf("--%s needs a value", m[1])
	}
	return err
}

// parseFlags parses args, then fills every flag not given on the command line from its
// CHATGROUPD_* environment variable. Flags win over the environment. --help prints h to stdout
// and returns errHelp; any bad value is a usageError (exit 2, one line).
func parseFlags(fs *flag.FlagSet, args []string, getenv env, stdout io.Writer, h help) error {
	cmd := strings.TrimPrefix(fs.Name(), "chatgroupd ")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout, fs, h)
			return errHelp
		}
		return usageError(cmd, flagError(err))
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
				errs = append(errs, fmt.Errorf("%s=%q: --%s: %w", envName(f.Name), v, f.Name, err))
			}
		}
	})
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	if len(errs) > 0 {
		return usageError(cmd, errs[0])
	}
	return nil
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
