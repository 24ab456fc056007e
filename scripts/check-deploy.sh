#!/usr/bin/env bash
# Checks what operators deploy: the Helm chart (lint, render, strict decode), the Prometheus alert
# rules (promtool check + unit tests, on the file and on the rendered PrometheusRule) and the
# Grafana dashboard (every PromQL query parsed against the registered metrics, then run on a real
# Prometheus 2.42 on loopback that scrapes metrics.Server and evaluates the alert rules).
# Installs nothing: needs Go (helm is the version pinned in tools/go.mod) and promtool (Debian
# package `prometheus`; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
chart=$root/charts/chatgroupd
kube_version=1.31.0 # the go-built helm would otherwise assume v1.20

# Build (or find in the build cache) the pinned helm once; deploytest uses it through $HELM too.
HELM=$(go -C "$root/tools" tool -n helm)
export HELM
helm() { "$HELM" "$@"; }

if ! command -v promtool >/dev/null 2>&1; then
	echo "check-deploy: promtool not found (apt-get install prometheus)" >&2
	exit 1
fi

for values in "" "$chart/ci/all-values.yaml"; do
	args=()
	if [ -n "$values" ]; then args=(-f "$values"); fi
	echo "--- helm lint (${values:-default values})"
	helm lint --strict "$chart" "${args[@]}"
	echo "--- helm template (${values:-default values})"
	helm template chatgroupd "$chart" --namespace chat --kube-version "$kube_version" "${args[@]}" >/dev/null
done

echo "--- promtool check/test rules (charts/chatgroupd/files)"
(cd "$chart/files" && promtool check rules alerts.yaml && promtool test rules alerts_test.yaml)

echo "--- deploytest: strict decode, PromQL vs registered metrics, rendered PrometheusRule, live Prometheus"
go -C deploytest vet ./...
CHATGROUPD_REQUIRE_PROMTOOL=1 go -C deploytest test -count=1 ./...
