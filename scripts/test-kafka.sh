#!/usr/bin/env bash
# test-kafka.sh — `make test-kafka`: start a real Apache Kafka broker on loopback, run the
# integration and fault suites against it, stop it.
#
# The packages run in lanes, each lane on a broker of its own, the lanes at once; within a lane
# one package after another (-p 1: the fault suite stops and restarts its lane's broker). The
# suites mostly wait on the wall clock (session timeouts, rate-limited drains), so on 2 cores
# two lanes take about the longer one (chaos ~220 s + integration ~200 s), not the sum (~670 s).
# The fault suite goes last in its lane: it counts the calls in its own process, so it is the
# suite a busy CPU disturbs most, and by then the other lane is ending.
#
# Settings (environment): those of kafka-local.sh (KAFKA_VERSION, KAFKA_PORT, ...), plus
#   TEST_KAFKA_LANES  lanes separated by ';', each a list of packages (default
#                     './chaos/... ./integration/...;./consumer/... ./dlq/...')
#   TEST_KAFKA_PKGS   packages to test in one lane (overrides TEST_KAFKA_LANES)
#   TEST_KAFKA_RUN    a -run pattern (default: all tests)
#   TEST_KAFKA_KEEP=1 leave the brokers running afterwards
# Lane n (from 0) uses KAFKA_PORT+2n and KAFKA_CONTROLLER_PORT+2n and the state directory
# KAFKA_STATE_DIR/lane-n (its go test -v output in go-test.log there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

# A state directory of its own (each lane's wiped first): each run starts from an empty cluster
# and never touches a broker a developer started with kafka-local.sh.
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

# Lanes: names and packages.
lanes="${TEST_KAFKA_PKGS:-${TEST_KAFKA_LANES:-./chaos/... ./integration/...;./consumer/... ./dlq/...}}"
IFS=';' read -r -a lane_pkgs <<<"$lanes"
lane_names=()
for n in "${!lane_pkgs[@]}"; do lane_names+=("lane-$n"); done
# lane_env N: the kafka-local.sh settings of lane N.
lane_env() {
	echo "KAFKA_STATE_DIR=$KAFKA_STATE_DIR/${lane_names[$1]}"
	echo "KAFKA_PORT=$((KAFKA_PORT + 2 * $1))"
	echo "KAFKA_CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + 2 * $1))"
}
# kl_lane N ARGS...: kafka-local.sh ARGS on lane N's broker.
kl_lane() {
	local n=$1
	shift
	# shellcheck disable=SC2046 # lane_env's lines are single words
	env $(lane_env "$n") "$kl" "$@"
}

started=()
cleanup() {
	rc=$?
	local n
	if ((rc != 0)); then
		for n in "${started[@]}"; do
			say "FAILED (exit $rc); last broker log lines of lane ${lane_names[$n]}:"
			kl_lane "$n" logs 60 >&2 2>/dev/null || true
		done
	fi
	if [[ "${TEST_KAFKA_KEEP:-0}" != 1 ]]; then
		for n in "${started[@]}"; do kl_lane "$n" stop || true; done
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
"$kl" fetch
mkdir -p "$KAFKA_STATE_DIR"
# Start the brokers at once.
pids=()
for n in "${!lane_names[@]}"; do
	kl_lane "$n" reset >/dev/null 2>&1 || true
	started+=("$n")
	kl_lane "$n" start &
	pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
say "${#lane_names[@]} broker(s) up in $((SECONDS - t0))s"

# -p 1: the fault suite stops and restarts its lane's broker, which must not happen under another
# package's tests; the same within every lane.
args=(-count=1 -p 1 -timeout 15m)
[[ -n "${TEST_KAFKA_RUN:-}" ]] && args+=(-run "$TEST_KAFKA_RUN")
# Verbose into a file per lane; the console gets each test's verdict, the fault suite's FIGURES
# lines and go test's closing lines, and the whole log's tail on failure.
pids=()
for n in "${!lane_names[@]}"; do
	read -r -a pkgs <<<"${lane_pkgs[$n]}"
	(
		# shellcheck disable=SC2046 # lane_env's lines are single words
		export $(lane_env "$n")
		CHATGROUPD_TEST_BROKERS="127.0.0.1:$KAFKA_PORT" CHATGROUPD_KAFKA_LOCAL="$kl" \
			go test -v "${args[@]}" "${pkgs[@]}" >"$KAFKA_STATE_DIR/go-test.log" 2>&1
	) &
	pids+=($!)
done
rc=0
for n in "${!lane_names[@]}"; do
	lrc=0
	wait "${pids[$n]}" || lrc=$?
	gotest_log="$KAFKA_STATE_DIR/${lane_names[$n]}/go-test.log"
	say "lane ${lane_names[$n]} (${lane_pkgs[$n]}): exit $lrc"
	grep -E '^(--- (PASS|FAIL|SKIP)|ok |FAIL|PASS$|panic:)|FIGURES' "$gotest_log" | grep -v -- '--- PASS: .*/' || true
	if ((lrc != 0)); then
		say "go test failed (exit $lrc); last 200 lines of $gotest_log:"
		tail -n 200 "$gotest_log" >&2
		rc=$lrc
	fi
done
if ((rc != 0)); then
	exit "$rc"
fi
say "passed in $((SECONDS - t0))s"
