#!/bin/bash
# A schemathesis CLI sweep against a real `carepath serve` (not run by pytest; docs/security.md,
# Probe results, "schemathesis"). Seeds a fresh SQLite demo registry (`carepath demo --population 0`)
# in OUT, serves it on 127.0.0.1:PORT, runs `st run` with the five conformance checks as clinical.lead
# (everything but users / ingest / access log), as admin (those, without PATCH) and as admin on
# PATCH /users/{username} last (it may take the admin's own role away), then stops the server.
#
#   N=50 BIN=.venv/bin tests/api/st_sweep.sh . 18735 /tmp/st-sweep    # reports: OUT/*.txt, OUT/*.ndjson
set -u
TREE=$(cd "$1" && pwd); PORT=$2; OUT=$3; BIN=$(cd "${BIN:-$TREE/.venv/bin}" && pwd)
rm -rf "$OUT"; mkdir -p "$OUT"; cp -r "$TREE/protocols" "$OUT/protocols"; cd "$OUT"
export PYTHONPATH=$TREE CAREPATH_COOKIE_SECURE=0
"$BIN/carepath" demo --population 0 --out "$OUT/var" --protocols "$OUT/protocols" > "$OUT/demo.log" 2>&1
"$BIN/carepath" serve --port "$PORT" --database-url "sqlite:///$OUT/var/carepath.db" --protocols "$OUT/protocols" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
tok() { curl -s -X POST "http://127.0.0.1:$PORT/auth/token" -d "username=$1&password=$1-demo-pw" \
          | "$BIN/python" -c "import sys, json; print(json.load(sys.stdin)['access_token'])"; }
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
for who in clinical.lead admin admin-patch; do
  case $who in
    clinical.lead) SEL=(--exclude-path-regex '^/(users|ingest|access-log)') ;;
    admin) SEL=(--include-path-regex '^/(users|ingest|access-log)' --exclude-method PATCH) ;;
    admin-patch) SEL=(--include-method PATCH --include-path-regex '^/users') ;;
  esac
  "$BIN/st" run "http://127.0.0.1:$PORT/openapi.json" -H "Authorization: Bearer $(tok "${who%-patch}")" "${SEL[@]}" \
     --exclude-path /auth/logout -c "$CHECKS" -n "${N:-50}" --generation-deterministic --continue-on-failure \
     --max-failures 100000 -w 1 --report ndjson --report-ndjson-path "$OUT/$who.ndjson" > "$OUT/$who.txt" 2>&1
  grep -E "^  (❌|✅)|generated" "$OUT/$who.txt" | sed "s/^/$who: /"
done
"$BIN/python" "$TREE/tests/api/st_count.py" "$OUT"/*.ndjson
