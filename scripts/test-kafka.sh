#!/usr/bin/env bash
# test-kafka.sh — `make test-kafka`: start a real Apache Kafka broker on loopback, run the
# integration and fault suites against it, stop it.
#
# Settings (environment): those of kafka-local.sh (KAFKA_VERSION, KAFKA_PORT, ...), plus
#   TEST_KAFKA_PKGS   packages to test (default ./integration/... ./consumer/... ./dlq/... ./chaos/...)
#   TEST_KAFKA_RUN    a -run pattern (default: all tests)
#   TEST_KAFKA_KEEP=1 leave the broker running afterwards
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

# A state directory of its own, wiped first: each run starts from an empty cluster and never
# touches a broker a developer started with kafka-local.sh.
export KAFKA_STATE_DIR="${KAFKA_STATE_DIR:-${TMPDIR:-/tmp}/chatgroupd-kafka-test}"
export KAFKA_PORT="${KAFKA_PORT:-19092}"
export KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
kl="$root/scripts/kafka-local.sh"

say() { echo "test-kafka: $*" >&2; }

apt_install() {
	if [[ "$(id -u)" != 0 ]]; then
		say "$* missing and not root: install it with apt-get install -y $*"
		return 1
	fi
	say "installing $*"
	# Another apt-get may hold the lock on a shared machine: wait for it rather than fail.
	if ! apt-get -o DPkg::Lock::Timeout=300 install -y -q "$@" >/dev/null 2>&1; then
		apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null 2>&1 || true
		apt-get -o DPkg::Lock::Timeout=300 install -y -q "$@" >/dev/null
	fi
}

command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
# kcat is optional for the suite (its interop tests skip without it) but CI must run them.
command -v kcat >/dev/null 2>&1 || apt_install kcat || say "kcat unavailable: kcat interop tests will skip"

started=0
cleanup() {
	rc=$?
	if ((rc != 0)); then
		say "FAILED (exit $rc); last broker log lines:"
		"$kl" logs 60 >&2 2>/dev/null || true
	fi
	if ((started)) && [[ "${TEST_KAFKA_KEEP:-0}" != 1 ]]; then
		"$kl" stop || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
"$kl" reset >/dev/null 2>&1 || true
started=1
"$kl" start
say "broker up in $((SECONDS - t0))s"

# -p 1: the fault suite stops and restarts the broker, which must not happen under another
# package's tests.
read -r -a pkgs <<<"${TEST_KAFKA_PKGS:-./integration/... ./consumer/... ./dlq/... ./chaos/...}"
args=(-count=1 -p 1 -timeout 15m)
[[ -n "${TEST_KAFKA_RUN:-}" ]] && args+=(-run "$TEST_KAFKA_RUN")
# Verbose into a file; the console gets each test's verdict, the fault suite's FIGURES lines and
# go test's closing lines, and the whole log's tail on failure.
gotest_log="$KAFKA_STATE_DIR/go-test.log"
set +e
CHATGROUPD_TEST_BROKERS="127.0.0.1:$KAFKA_PORT" CHATGROUPD_KAFKA_LOCAL="$kl" \
	go test -v "${args[@]}" "${pkgs[@]}" >"$gotest_log" 2>&1
rc=$?
set -e
grep -E '^(--- (PASS|FAIL|SKIP)|ok |FAIL|PASS$|panic:)|FIGURES' "$gotest_log" | grep -v -- '--- PASS: .*/' || true
if ((rc != 0)); then
	say "go test failed (exit $rc); last 200 lines of $gotest_log:"
	tail -n 200 "$gotest_log" >&2
	exit "$rc"
fi
say "passed in $((SECONDS - t0))s"
