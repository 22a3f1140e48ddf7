#!/usr/bin/env bash
# Make sure the programs the suite runs for real are present: Java 17+ and Maven (the local Kafka
# broker), PostgreSQL's server (the audit sink's database test), Chromium (the web console's
# browser test) and RabbitMQ (Celery's broker in `bench peer`). As root on Debian/Ubuntu they are installed with apt-get; otherwise say what to do.
set -euo pipefail
# usage: prereqs.sh [demo|test]  (demo needs only the broker's Java and Maven)
need=()
if [ -z "${SHUNTER_BOOTSTRAP_SERVERS:-}" ] && [ -z "${KAFKA_HOME:-}" ]; then
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need+=(maven)
fi
if [ "${1:-test}" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} with apt-get (needed by the demo and the test suite)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "Shunter's suite needs ${need[*]}: install them (Debian: apt-get install ${need[*]})." >&2
  exit 1
fi
