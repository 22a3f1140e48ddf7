#!/usr/bin/env bash
# Make sure Java 17+ and Maven are present (they run and fetch the local Kafka broker).
set -euo pipefail
need=()
if ! command -v java >/dev/null 2>&1; then need+=(openjdk-17-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then need+=(maven); fi
if [ -n "${SHUNTER_BOOTSTRAP_SERVERS:-}" ] || [ -n "${KAFKA_HOME:-}" ]; then need=(); fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (needed to run the local Kafka broker)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "Shunter needs ${need[*]} to run a local Kafka broker: install them, or set SHUNTER_BOOTSTRAP_SERVERS to an existing cluster." >&2
  exit 1
fi
