#!/usr/bin/env bash
# eventferry's one entry point: sets up .venv on first use (quietly when already done), then runs
# a subcommand. ./run.sh help lists them.
set -euo pipefail
# Paths in flags are the caller's: run.sh never changes directory for the pipelines; the project's
# packages come first on PYTHONPATH instead.
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=$HERE/.venv
PY=${PYTHON:-python3}
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"

ensure_venv() {
  # The C kernels are compiled at install: a change to one reinstalls too.
  local stamp="$VENV/.installed-$(cat "$HERE/setup.py" "$HERE"/transforms/kernels/_*.c | sha1sum | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  echo "run.sh: installing eventferry and Apache Beam into $VENV (first run, about a minute)..." >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  ensure_compiler
  if ! "$VENV/bin/pip" install --disable-pip-version-check -q -e "$HERE[test]" >"$VENV/install.log" 2>&1; then
    tail -30 "$VENV/install.log" >&2
    echo "run.sh: pip install failed; the full log is $VENV/install.log" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

# Streaming ingest's JSON parser (transforms/kernels/_rawjson.c) and exports' JSON text
# (transforms/kernels/_jsonify.c) are compiled at install. Without a compiler the install still
# succeeds: ingest parses with msgspec alone, three times slower, and exports write the same bytes
# with Arrow kernels, slower.
ensure_compiler() {
  local include
  include=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  command -v cc >/dev/null && [ -f "$include/Python.h" ] && return 0
  echo "run.sh: installing a C compiler and Python's headers (apt-get, first run)..." >&2
  if [ "$(id -u)" != 0 ] || ! { apt-get update -qq && apt-get install -y -qq gcc python3-dev; } \
      >"$VENV/apt-cc.log" 2>&1; then
    echo "run.sh: no C compiler: ingest will parse JSON with msgspec alone (3x slower);" \
         "install gcc and python3-dev, then rm $VENV/.installed-* (see $VENV/apt-cc.log)" >&2
  fi
}

AZURITE=3.37.0
ensure_tools() {
  # Azurite (the Azure Blob emulator the store tests run) comes from npm, into .tools/.
  grep -qs "\"version\": \"$AZURITE\"" "$HERE/.tools/node_modules/azurite/package.json" && return 0
  echo "run.sh: installing azurite@$AZURITE into .tools (npm, first run)..." >&2
  if ! npm install --prefix "$HERE/.tools" --no-audit --no-fund --loglevel=error "azurite@$AZURITE" \
      >"$VENV/npm.log" 2>&1; then
    tail -30 "$VENV/npm.log" >&2
    echo "run.sh: npm install failed; the full log is $VENV/npm.log" >&2
    exit 1
  fi
}

# Prism, Beam's Go runner, at the pinned Beam version, built from the Go module proxy into
# .tools/bin (tests/test_prism.py runs on it; `--runner PrismRunner` uses it).
BEAM=$(sed -n "s/^BEAM_VERSION = '\(.*\)'/\1/p" "$HERE/setup.py")
PRISM=$HERE/.tools/bin/prism
ensure_prism() {
  [ -x "$PRISM" ] && [ -f "$PRISM-$BEAM.built" ] && return 0
  echo "run.sh: building Prism $BEAM into .tools/bin (go install, first run, a few minutes)..." >&2
  mkdir -p "$HERE/.tools/bin"
  if GOBIN="$HERE/.tools/bin" go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM" \
      >"$VENV/go.log" 2>&1; then
    rm -f "$HERE"/.tools/bin/prism-*.built && touch "$PRISM-$BEAM.built"
  else
    tail -20 "$VENV/go.log" >&2
    echo "run.sh: could not build Prism (see $VENV/go.log); the Prism tests will fail" >&2
  fi
}

# A pipeline asked to run on Prism without --prism_location runs on the Prism built here, not on
# one Beam would try to download.
with_prism() {
  local a
  for a in "$@"; do [[ "$a" == *prism_location* ]] && return 1; done
  for a in "$@"; do [[ "$a" == *PrismRunner* ]] && return 0; done
  return 1
}

# The Pub/Sub emulator ships with google-cloud-cli (Google's apt repository, which some machines
# cannot reach); it runs on Java, which Debian has. Without either, the Pub/Sub tests are skipped
# (pytest names what is missing) and everything else runs. EVENTFERRY_PUBSUB_EMULATOR overrides
# the emulator's path (tests/test_ingest_pubsub.py reads it too).
export EVENTFERRY_PUBSUB_EMULATOR=${EVENTFERRY_PUBSUB_EMULATOR:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}
ensure_pubsub_emulator() {
  if [ ! -x "$EVENTFERRY_PUBSUB_EMULATOR" ]; then
    echo "run.sh: no Pub/Sub emulator at $EVENTFERRY_PUBSUB_EMULATOR: the Pub/Sub tests will be" \
         "skipped (apt-get install google-cloud-cli-pubsub-emulator, from Google's apt repository)" >&2
  fi
  command -v java >/dev/null && return 0
  echo "run.sh: installing Java for the Pub/Sub emulator (apt-get, first run)..." >&2
  if [ "$(id -u)" != 0 ] || ! { apt-get update -qq && apt-get install -y -qq default-jre-headless; } \
      >"$VENV/apt.log" 2>&1; then
    echo "run.sh: could not install Java (see $VENV/apt.log): the Pub/Sub tests will be skipped;" \
         "install default-jre-headless" >&2
  fi
}

# pytest args: test paths given -> only those; otherwise the whole tests/ folder.
test_args() {
  local a
  for a in "$@"; do [[ "$a" != -* && -e "${a%%::*}" ]] && return 0; done
  return 1
}

usage() {
  cat <<'USAGE'
usage: ./run.sh COMMAND [flags]
  demo                 generate a sample customer bucket (3 days, ~100k events) and import it
  test [pytest args]   run the test suite (test --fast: the fast tier, under a minute)
  import [flags]       import customer day partitions into the lake (--help for flags)
  export [flags]       export lake days to a destination as Parquet, JSON lines, CSV, Avro, XML or Iceberg
  ingest [flags]       raw JSON events (Pub/Sub, or JSON-lines files) -> the lake by server date
  forget --lake L --user_id ID  erase users from the lake and every delivered export
  check --dest D       preflight: PUT, GET, LIST, DELETE a probe at --dest/--lake (LIST, GET at --source)
  backfill import|export [flags]  a range of days, resumable, one job per --days_per_job days
  dataflow build|launch PIPELINE   Flex Template image and spec, or a launch (gcloud; --help)
  schema import|lake|raw  print a contract as JSON Schema (and Arrow/Parquet schema)
  status --lake L      one row per day: source ready, imported, exported, late (--json; exit 1 if late/refused)
  reconcile --lake L   days against their manifests: files, sizes, rows, accounting, exports (--deep: every byte)
  report --lake L --out report.html   one self-contained HTML page: charts, days, recent runs
  maintain --lake W --catalog C  Iceberg lake: expire snapshots, --compact small files, --remove_orphans
  bench import|export|ingest|stores  benchmarks (see README: Benchmarks)
USAGE
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
if with_prism "$@"; then ensure_venv; ensure_prism; set -- "$@" --prism_location "$PRISM"; fi
case "$cmd" in
  help|-h|--help) usage ;;
  demo)   ensure_venv; exec "$VENV/bin/python" -m pipelines.demo "$@" ;;
  test)   ensure_venv; ensure_tools; ensure_prism; ensure_pubsub_emulator
          cd "$HERE"   # test paths are the project's (tests/...); pytest's settings: pyproject.toml
          fast=; [ "${1:-}" = --fast ] && { fast=1; shift; set -- -m fast "$@"; }   # the fast tier, no mypy
          if test_args "$@"; then set -- "$@"; else
            "$VENV/bin/ruff" check --quiet . || { echo "run.sh: ruff found the problems above" >&2; exit 1; }
            [ -n "$fast" ] || "$VENV/bin/mypy" pipelines transforms schemas \
              || { echo "run.sh: mypy found the problems above" >&2; exit 1; }
            [ -n "$fast" ] || "$VENV/bin/python" -m tests.tools   # the tools the suite reads with
            # The suite on three pytest workers, each taking whole modules (a module's baselines are
            # built once): on two cores a third fills the time the others wait on processes, servers
            # and JVMs (docs/testing.md); -n 0 runs it in one process. The fast tier starts no workers: they cost more than it takes.
            if [ -n "$fast" ]; then set -- tests "$@"
            else set -- -n "${EVENTFERRY_TEST_WORKERS:-3}" --dist loadfile tests "$@"; fi
          fi
          exec "$VENV/bin/python" -m pytest "$@" ;;
  import) ensure_venv; exec "$VENV/bin/python" -m pipelines.import_events "$@" ;;
  export) ensure_venv; exec "$VENV/bin/python" -m pipelines.export_events "$@" ;;
  ingest) ensure_venv; exec "$VENV/bin/python" -m pipelines.ingest "$@" ;;
  check)  ensure_venv; exec "$VENV/bin/python" -m pipelines.check "$@" ;;
  forget) ensure_venv; exec "$VENV/bin/python" -m pipelines.forget "$@" ;;
  backfill) ensure_venv; exec "$VENV/bin/python" -m pipelines.backfill "$@" ;;
  dataflow) ensure_venv; exec "$VENV/bin/python" -m pipelines.dataflow "$@" ;;
  schema) ensure_venv; exec "$VENV/bin/python" -m pipelines.schema "$@" ;;
  status) ensure_venv; exec "$VENV/bin/python" -m pipelines.status "$@" ;;
  reconcile) ensure_venv; exec "$VENV/bin/python" -m pipelines.reconcile "$@" ;;
  report) ensure_venv; exec "$VENV/bin/python" -m pipelines.report "$@" ;;
  maintain) ensure_venv; exec "$VENV/bin/python" -m pipelines.maintain "$@" ;;
  bench)  ensure_venv; exec "$VENV/bin/python" -m tests.bench.bench_"${1:?bench what? e.g. ./run.sh bench import}" "${@:2}" ;;
  *) echo "run.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
