#!/usr/bin/env bash
# Runs the PostgreSQL deployment of docs/deploy.md for real, without Docker:
# `agentd migrate` on a fresh schema, then three replicas agentd-1..3 on that one
# schema (same AGENTD_DB, same AGENTD_BOOTSTRAP_KEY) behind deploy/nginx.conf, and
# checks what the doc promises of them: requests spread over all three, state
# shared (agents, session order, key revocation within a second), streams
# unbuffered, a replica killed with SIGKILL under load while nginx keeps answering
# (a POST is passed on only when its connection was refused, never once sent), its
# leases and holds coming back, the database unavailable for 7 s and back, and
# `agentd check` clean. First, three replicas started together on an empty schema
# without a bootstrap key: they migrate once and mint one operator key.
# docs/deploy.md records the output.
#
#   sudo bash deploy/nginx-smoke-postgres.sh   # root, nginx, curl >= 7.84, jq, psql, Go
#
# SMOKE_PG is a superuser URL of the PostgreSQL server and database (default the
# local test one, postgres://postgres@127.0.0.1:5432/test?sslmode=disable). The
# script creates a role smoke_pg_<pid> with a random password, which the replicas
# connect as, and the schemas smoke_pg_<pid> and smoke_pg_<pid>_nokey it owns, and
# drops all three at the end. KEEP=1 keeps the working directory (logs). As in
# deploy/nginx-smoke.sh, everything listens on loopback (nginx 127.0.0.1:8080, the
# replicas 127.0.0.11-13:8080, the model upstreams 127.0.0.1:18000-18001),
# agentd-1..3 resolve through a private /etc/hosts (a bind mount in nginx's mount
# namespace), and the copy of deploy/nginx.conf that nginx runs differs only in
# its listen address and pid file (the diff is printed). Processes are ended by
# their pid only.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in nginx curl jq psql go unshare ss; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "smoke: run as root (unshare -m, mount --bind)" >&2; exit 1; }

pg=${SMOKE_PG:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
sql() { psql "$pg" -v ON_ERROR_STOP=1 -qtAX -c "$1"; }
# The replicas connect as a role of their own (as compose's user agentd), which
# owns their schemas; the outage check takes its LOGIN away and gives it back.
schema=smoke_pg_$$
nokey_schema=${schema}_nokey
role=$schema
password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
case "$pg" in *\?*) sep='&' ;; *) sep='?' ;; esac
app_url=$(sed "s|^postgres\(ql\)\{0,1\}://[^@/]*@|postgres://$role:$password@|" <<<"$pg")
dsn="$app_url${sep}search_path=$schema"
nokey_dsn="$app_url${sep}search_path=$nokey_schema"

work=$(mktemp -d)
pids=()
schemas=()
role_created=""
cleanup() {
  [ -n "${work:-}" ] && touch "$work/stop-load"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for s in "${schemas[@]}"; do
    sql "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 && echo "smoke: dropped schema $s" || echo "smoke: could not drop schema $s" >&2
  done
  if [ -n "$role_created" ]; then
    sql "DROP ROLE IF EXISTS $role" >/dev/null 2>&1 && echo "smoke: dropped role $role" || echo "smoke: could not drop role $role" >&2
  fi
  if [ "${KEEP:-}" = 1 ]; then echo "smoke: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

failures=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }

key=agd_smoke_0123456789abcdef
proxy=http://127.0.0.1:8080
addrs=(127.0.0.11 127.0.0.12 127.0.0.13)
auth=(-H "Authorization: Bearer $key")

echo "--- build (the Dockerfile's command)"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/agentd" ./cmd/agentd
go build -o "$work/agentd-bench" ./cmd/agentd-bench
"$work/agentd" version
echo "PostgreSQL: $(sql 'SHOW server_version'), max_connections $(sql 'SHOW max_connections')"

echo "--- upstreams: slow (8 pieces, 500 ms apart) for the stream, fast (200 ms, 8 pieces) for the rest"
# Waits until pid listens on address:port, so that a port some other process
# holds is an error rather than a silent test of that process.
wait_listening() { # pid address:port
  for _ in $(seq 100); do
    ss -Hltnp "sport = :${2##*:}" | grep "${2%:*}:${2##*:} " | grep -q "pid=$1," && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  echo "smoke: pid $1 does not listen on $2 (is the port taken?)" >&2
  exit 1
}
"$work/agentd-bench" upstream --addr 127.0.0.1:18000 --tokens 8 --stream-interval 500ms >"$work/upstream-slow.log" 2>&1 &
pids+=($!)
wait_listening $! 127.0.0.1:18000
"$work/agentd-bench" upstream --addr 127.0.0.1:18001 --tokens 8 --latency 200ms >"$work/upstream-fast.log" 2>&1 &
pids+=($!)
wait_listening $! 127.0.0.1:18001

# Priced models, so that the money of every run is in the books agentd check reads.
# run_timeout 10s: the holds of a killed replica's runs expire after 10s + 10s
# (run_timeout + min(run_timeout, 1m)) instead of 180 s; the sweeper runs every 1 s.
cat >"$work/agentd.yaml" <<'EOF'
providers:
  - name: slow
    kind: openai
    base_url: http://127.0.0.1:18000/v1
  - name: fast
    kind: openai
    base_url: http://127.0.0.1:18001/v1
models:
  - id: slow-mini
    provider: slow
    upstream_model: gpt-4o-mini
    context_window: 8192
    max_output_tokens: 1024
    price: {input: 1, output: 2}
  - id: fast-mini
    provider: fast
    upstream_model: gpt-4o-mini
    context_window: 8192
    max_output_tokens: 1024
    price: {input: 1, output: 2}
limits:
  run_timeout: 10s
sweep_interval: 1s
postgres:
  max_conns: 4
  statement_timeout: 5s
EOF

declare -A replica_pid
start_replica() { # name address dsn [env...]
  local name=$1 addr=$2 db=$3
  shift 3
  env "$@" AGENTD_POSTGRES_APPLICATION_NAME="$schema-$name" "$work/agentd" serve --addr "$addr:8080" --db "$db" \
    --config "$work/agentd.yaml" >>"$work/$name.log" 2>&1 &
  replica_pid[$name]=$!
  pids+=($!)
  wait_listening $! "$addr:8080"
}
wait_ready() { # url
  for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
stop_replica() { # name: SIGTERM, and its exit status
  kill -TERM "${replica_pid[$1]}"
  wait "${replica_pid[$1]}"
}

echo "--- without a bootstrap key: three replicas started together on an empty schema"
sql "CREATE ROLE $role LOGIN PASSWORD '$password'"
role_created=yes
sql "CREATE SCHEMA $nokey_schema AUTHORIZATION $role"
schemas+=("$nokey_schema")
for i in 1 2 3; do start_replica "nokey-$i" "${addrs[i - 1]}" "$nokey_dsn" -u AGENTD_BOOTSTRAP_KEY; done
ready=0
for a in "${addrs[@]}"; do wait_ready "http://$a:8080/readyz" && ready=$((ready + 1)); done
[ "$ready" = 3 ] && pass "3 replicas migrated an empty schema together and are ready" || fail "$ready of 3 replicas got ready on an empty schema"
versions=$(sql "SELECT string_agg(version::text, ',' ORDER BY version) FROM $nokey_schema.schema_migrations")
[ "$versions" = 1,2,3 ] && pass "schema_migrations holds each migration once: $versions" || fail "schema_migrations: $versions"
minted=$(cat "$work"/nokey-?.log | grep -c 'created the operator key' || true)
printed=$(cat "$work"/nokey-?.log | sed -n 's/^    \(agd_[^ ]*\)$/\1/p' | head -1)
keys=$(sql "SELECT count(*) FROM $nokey_schema.api_keys")
[ "$minted" = 1 ] && [ "$keys" = 1 ] && pass "one operator key minted and printed in one replica's log ($(grep -l 'created the operator key' "$work"/nokey-?.log | xargs -n1 basename)), 1 row in api_keys" \
  || fail "operator keys: $minted printed, $keys in api_keys"
ok=0
for a in "${addrs[@]}"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$a:8080/api/v3/keys" -H "Authorization: Bearer $printed")" = 200 ] && ok=$((ok + 1))
done
[ "$ok" = 3 ] && pass "the printed key is accepted by all 3 replicas" || fail "the printed key is accepted by $ok of 3 replicas"
stopped=0
for i in 1 2 3; do stop_replica "nokey-$i" && stopped=$((stopped + 1)); done
[ "$stopped" = 3 ] && pass "the 3 replicas exited 0 on SIGTERM" || fail "$stopped of 3 replicas exited 0 on SIGTERM"

echo "--- agentd migrate on a fresh schema ($schema), then three replicas with AGENTD_BOOTSTRAP_KEY"
sql "CREATE SCHEMA $schema AUTHORIZATION $role"
schemas+=("$schema")
if out=$("$work/agentd" migrate --db "$dsn" 2>&1); then pass "agentd migrate exited 0: $out"; else fail "agentd migrate: $out"; fi
if out=$("$work/agentd" migrate --db "$dsn" 2>&1) && [[ $out == *"the newest this agentd knows"* ]]; then pass "agentd migrate again exited 0: $out"; else fail "agentd migrate again: $out"; fi
for i in 1 2 3; do start_replica "agentd-$i" "${addrs[i - 1]}" "$dsn" AGENTD_BOOTSTRAP_KEY="$key"; done
for a in "${addrs[@]}"; do
  wait_ready "http://$a:8080/readyz" || { echo "smoke: agentd on $a did not get ready" >&2; cat "$work"/agentd-?.log >&2; exit 1; }
done
grep -q 'created the operator key' "$work"/agentd-?.log && fail "a replica minted a key although AGENTD_BOOTSTRAP_KEY is set" \
  || pass "replicas ready; none minted a key (AGENTD_BOOTSTRAP_KEY set); $(sql "SELECT count(*) FROM $schema.api_keys") row in api_keys"
conns=$(sql "SELECT string_agg(application_name || '=' || n, ' ' ORDER BY application_name) FROM (SELECT application_name, count(*) n FROM pg_stat_activity WHERE application_name LIKE '$schema-agentd-%' GROUP BY 1) c")
echo "      connections by application_name while idle: ${conns//$schema-/}"

cat /etc/hosts - >"$work/hosts" <<'EOF'
127.0.0.11 agentd-1
127.0.0.12 agentd-2
127.0.0.13 agentd-3
EOF
sed -e 's|^\( *\)listen 8080;|\1listen 127.0.0.1:8080;|' -e "s|^pid /tmp/nginx.pid;|pid $work/nginx.pid;|" \
  deploy/nginx.conf >"$work/nginx.conf"
echo "--- the copy nginx runs differs from deploy/nginx.conf only in:"
diff deploy/nginx.conf "$work/nginx.conf" || true

# Runs a command with the private /etc/hosts. It execs, so that a backgrounded
# call's pid ($!) is the command's own and cleanup ends it.
in_hosts_ns() { # command...
  exec unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$work/hosts" "$@"
}
(in_hosts_ns nginx -t -c "$work/nginx.conf") 2>&1 | sed 's/^/      /'
in_hosts_ns nginx -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
pids+=($!)
wait_listening $! 127.0.0.1:8080

# The replica that answered a request, from nginx's access log (agentd logs no
# requests and sends no header naming itself): the last address of $upstream_addr
# on the line with the request's X-Request-ID.
served_by() { # request-id
  sed -n "s/.* request_id=$1 upstream=\(.*\) upstream_status=.*/\1/p" "$work/nginx.log" | awk -F', ' '{ print $NF }'
}
per_replica() { # request-id-prefix: "agentd-1=N agentd-2=N agentd-3=N"
  local out="" i n
  for i in 1 2 3; do
    n=$(grep -E " request_id=$1[0-9]+ " "$work/nginx.log" | sed -n 's/.* upstream=\(.*\) upstream_status=.*/\1/p' \
      | awk -F', ' '{ print $NF }' | grep -c "^127.0.0.1$i:8080$" || true)
    out+="agentd-$i=$n "
  done
  echo "${out% }"
}
all_three() { [[ $1 != *=0* ]]; }

echo "--- checks"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$proxy/readyz")" = 200 ] && pass "/readyz through nginx is 200" || fail "/readyz through nginx"
out=$(curl -s "$proxy/api/v3/admin/orgs/default/credits" "${auth[@]}" -d '{"amount": 1000}')
[ "$(jq -r .data.balance <<<"$out")" = 1000 ] && pass "1000 credits granted through nginx" || fail "grant: $out"

agent=$(curl -s "$proxy/api/v3/agents/create" "${auth[@]}" -H 'X-Request-ID: create-agent' \
  -d '{"agent_name": "turns", "agent_description": "takes turns", "model": "fast-mini"}' | jq -r .data.id)
curl -sf "$proxy/api/v3/agents/create" "${auth[@]}" \
  -d '{"agent_name": "streamer", "agent_description": "streams", "model": "slow-mini"}' >/dev/null
ok=0
for a in "${addrs[@]}"; do
  got=$(curl -s "http://$a:8080/api/v3/agents/$agent" "${auth[@]}" | jq -r .data.id)
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$a:8080/api/v3/agents/run-agents/turns/run" "${auth[@]}" -d '{"message": "hello"}')
  [ "$got" = "$agent" ] && [ "$code" = 200 ] && ok=$((ok + 1))
done
[ "$ok" = 3 ] && pass "agent $agent created through nginx (by $(served_by create-agent)) is read and runs on all 3 replicas directly" \
  || fail "agent $agent answers on $ok of 3 replicas directly"

ok=0
for i in $(seq 15); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" \
    -H "X-Request-ID: spread-$i" -d '{"message": "hello"}')
  [ "$code" = 200 ] && ok=$((ok + 1))
done
counts=$(per_replica spread-)
[ "$ok" = 15 ] && all_three "$counts" && pass "15 of 15 runs through nginx answered 200, spread over all 3 replicas (nginx log, upstream by X-Request-ID): $counts" \
  || fail "$ok of 15 runs answered 200; by replica: $counts"

# One session, turn after turn, through nginx: whichever replica takes a turn sees
# every earlier one (history_turns), and the session reads back in order everywhere.
ok=0
for i in $(seq -w 1 10); do
  hist=$(curl -s "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" -H "X-Request-ID: turn-$i" \
    -H 'X-Session-ID: smoke-sequential' -d "{\"message\": \"turn $i\"}" | jq -r .context.history_turns)
  [ "$hist" = $((10#$i - 1)) ] && ok=$((ok + 1))
done
counts=$(per_replica turn-)
want=$(printf 'turn %02d\n' $(seq 10))
session_in_order() { # session-id base-url
  [ "$(curl -s "$2/api/v3/agents/$agent/sessions/$1?limit=100" "${auth[@]}" | jq -r '.data.turns[].user')" = "$want" ]
}
in_order=0
for base in "$proxy" "${addrs[@]/#/http://}"; do
  [[ $base == "$proxy" ]] || base=$base:8080
  session_in_order smoke-sequential "$base" && in_order=$((in_order + 1))
done
[ "$ok" = 10 ] && all_three "$counts" && [ "$in_order" = 4 ] \
  && pass "10 turns of one session through nginx ($counts), each saw all earlier turns; GET .../sessions/smoke-sequential lists turn 01..10 in order through nginx and on each replica" \
  || fail "sequential session: $ok of 10 turns saw their history; by replica $counts; in order on $in_order of 4 reads"

# The same with every turn sent 100 ms after the previous one, while earlier turns
# still run (each takes 200 ms upstream): they queue for the session on different
# replicas, and the queue is first come, first served across replicas.
: >"$work/concurrent.txt"
cpids=()
for i in $(seq -w 1 10); do
  (curl -s -o /dev/null -w "$i %{http_code}\n" "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" -H "X-Request-ID: conc-$i" \
    -H 'X-Session-ID: smoke-concurrent' -d "{\"message\": \"turn $i\"}" >>"$work/concurrent.txt") &
  cpids+=($!)
  sleep 0.1
done
wait "${cpids[@]}"
ok=$(grep -c ' 200$' "$work/concurrent.txt" || true)
counts=$(per_replica conc-)
session_in_order smoke-concurrent "$proxy" && in_order=yes || in_order=no
[ "$ok" = 10 ] && all_three "$counts" && [ "$in_order" = yes ] \
  && pass "10 turns sent 100 ms apart, queued on one session across replicas ($counts): all 200, stored in the order sent" \
  || fail "concurrent session: $ok of 10 answered 200; by replica $counts; in order: $in_order ($(curl -s "$proxy/api/v3/agents/$agent/sessions/smoke-concurrent?limit=100" "${auth[@]}" | jq -r '[.data.turns[].user] | join(",")'))"

# Prints "first_data_seconds total_seconds lines" of a stream through nginx.
stream_times() { # request-id path body
  local start line first="" n=0
  start=$EPOCHREALTIME
  while IFS= read -r line; do
    if [ -z "$first" ] && [[ $line == data:* ]]; then first=$EPOCHREALTIME; fi
    n=$((n + 1))
  done < <(curl -sN "$proxy$2" "${auth[@]}" -H "X-Request-ID: $1" -d "$3")
  awk -v s="$start" -v f="${first:-$EPOCHREALTIME}" -v e="$EPOCHREALTIME" -v n="$n" \
    'BEGIN { printf "%.2f %.2f %d\n", f - s, e - s, n }'
}
check_stream() { # label request-id path body
  read -r first total lines < <(stream_times "$2" "$3" "$4")
  echo "      $1 (served by $(served_by "$2")): first data after ${first}s, ended after ${total}s, $lines lines"
  awk -v f="$first" -v t="$total" 'BEGIN { exit !(f < 1.5 && t > 3 && t - f > 2) }' \
    && pass "$1: the first event arrived seconds before the end" || fail "$1: the stream arrived buffered"
}
check_stream "run stream" stream-run /api/v3/agents/run-agents/streamer/run '{"message": "hello", "stream": true}'
check_stream "chat completion stream" stream-chat /v1/chat/completions \
  '{"model": "slow-mini", "stream": true, "messages": [{"role": "user", "content": "hello"}]}'

# A key used on agentd-2 and agentd-3 (so cached there), revoked through agentd-1.
out=$(curl -s "$proxy/api/v3/keys" "${auth[@]}" -d '{"name": "doomed", "scopes": ["run"]}')
kid=$(jq -r .data.id <<<"$out")
ksecret=$(jq -r .data.key <<<"$out")
for a in 127.0.0.12 127.0.0.13; do
  curl -sf -o /dev/null "http://$a:8080/v1/models" -H "Authorization: Bearer $ksecret" || fail "key $kid refused on $a before the revocation"
done
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.11:8080/api/v3/keys/$kid" "${auth[@]}")
revoked=$EPOCHREALTIME
for a in 127.0.0.12 127.0.0.13; do
  took=""
  while awk -v s="$revoked" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n - s < 3) }'; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$a:8080/v1/models" -H "Authorization: Bearer $ksecret")" = 401 ]; then
      took=$(awk -v s="$revoked" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.3f", n - s }')
      break
    fi
    sleep 0.01
  done
  [ "$code" = 200 ] && [ -n "$took" ] && awk -v t="$took" 'BEGIN { exit !(t < 1) }' \
    && pass "key revoked through agentd-1 (DELETE $code) is refused (401) by $a after ${took}s" \
    || fail "key revoked through agentd-1 (DELETE $code): $a refused it after ${took:-more than 3}s"
done

echo "--- SIGKILL of agentd-2 under load through nginx"
# 6 clients, each sending runs on a session of its own, each run with an
# Idempotency-Key (its request id). A run that gets no 200 is retried with the same
# key, as docs/deploy.md tells clients to: a 502 (sent, the replica died) until 200,
# a 409 (the key is still marked in flight by the dead replica) after its
# Retry-After. Every request has its id in the query string as well, so that
# nginx's error log lines can be matched to it.
victim=agentd-2
victim_addr=127.0.0.12:8080
: >"$work/load.txt"
: >"$work/retries.txt"
load_worker() { # worker
  local w=$1 i=0 id n out code
  while [ ! -e "$work/stop-load" ]; do
    i=$((i + 1))
    id=kill-$w-$i
    n=0
    while :; do
      local rid=$id start=$EPOCHREALTIME
      [ "$n" -gt 0 ] && rid=$id-r$n
      out=$(curl -s -o /dev/null --max-time 60 -w '%{http_code} %{time_total} %header{idempotent-replayed}' \
        "$proxy/api/v3/agents/run-agents/turns/run?smoke=$rid" "${auth[@]}" -H "X-Request-ID: $rid" \
        -H "X-Session-ID: load-$w" -H "Idempotency-Key: $id" -d "{\"message\": \"load $w $i\"}") || true
      code=${out%% *}
      if [ "$n" = 0 ]; then echo "$id $start $out" >>"$work/load.txt"; else echo "$rid $start $out" >>"$work/retries.txt"; fi
      [ "$code" = 200 ] && break
      n=$((n + 1))
      [ "$n" -gt 30 ] && { echo "$id gave-up" >>"$work/retries.txt"; break; }
      [ "$code" = 409 ] && sleep 1 || sleep 0.2
    done
  done
}
# Connections of each replica to PostgreSQL, sampled while the load runs.
sample_conns() {
  while [ ! -e "$work/stop-load" ]; do
    sql "SELECT application_name, count(*) FROM pg_stat_activity WHERE application_name LIKE '$schema-agentd-%' GROUP BY 1" >>"$work/conns.txt" || true
    sleep 0.5
  done
}
rm -f "$work/stop-load"
load_pids=()
for w in 1 2 3 4 5 6; do
  load_worker "$w" &
  load_pids+=($!)
  pids+=($!)
done
sample_conns &
pids+=($!)
sleep 3
kill -KILL "${replica_pid[$victim]}"
killed_at=$EPOCHREALTIME
victim_rc=0
wait "${replica_pid[$victim]}" 2>/dev/null || victim_rc=$?
echo "      $victim (pid ${replica_pid[$victim]}) got SIGKILL after 3 s of load (exit status $victim_rc); 13 s more, past nginx's fail_timeout of 10 s"
sleep 13
touch "$work/stop-load"
wait "${load_pids[@]}" # each finishes its current run (and its retries)

# What nginx did with each first attempt: its upstream hops from the access log,
# and from the error log whether a failed hop was refused (connect() failed: nothing
# sent) or failed after the request was sent.
declare -A code_of start_of ups_of refused sent
while read -r id start code _; do code_of[$id]=$code; start_of[$id]=$start; done <"$work/load.txt"
while IFS='|' read -r id ups; do ups_of[$id]=$ups; done < <(
  sed -n 's/.* request_id=\(kill-[0-9]*-[0-9]*\) upstream=\(.*\) upstream_status=.*/\1|\2/p' "$work/nginx.log" | tr -d ' ')
other_errors=0
while IFS= read -r line; do
  id=$(sed 's/.*smoke=\(kill-[0-9]*-[0-9]*\(-r[0-9]*\)\{0,1\}\).*/\1/' <<<"$line")
  addr=$(sed -n 's/.* upstream: "http:\/\/\([^/]*\)\/.*/\1/p' <<<"$line")
  [ "$addr" = "$victim_addr" ] || { other_errors=$((other_errors + 1)); continue; }
  if [[ $line == *'connect() failed (111: Connection refused)'* ]]; then refused[$id]=1; else sent[$id]=1; fi
done < <(grep '\[error\].*smoke=kill-' "$work/nginx.log" || true)
total=${#code_of[@]}
ok=0 cut=0 retried=0 bad=()
for id in "${!code_of[@]}"; do
  ups=${ups_of[$id]:-none}
  if [ "${code_of[$id]}" = 200 ]; then
    ok=$((ok + 1))
    if [[ $ups == *,* ]]; then
      # Passed on: every failed hop must be the dead replica, refused, never sent.
      IFS=, read -ra hops <<<"${ups%,*}"
      only_victim=yes
      for h in "${hops[@]}"; do [ "$h" = "$victim_addr" ] || only_victim=no; done
      if [ "$only_victim" = yes ] && [ -n "${refused[$id]:-}" ] && [ -z "${sent[$id]:-}" ]; then
        retried=$((retried + 1))
      else
        bad+=("$id 200 upstream=$ups refused=${refused[$id]:-} sent=${sent[$id]:-}")
      fi
    fi
  else
    # Allowed only for a run that was in flight on the dead replica: sent to it
    # before the kill, answered 502 by nginx, and not passed on.
    if [ "${code_of[$id]}" = 502 ] && [ "$ups" = "$victim_addr" ] && [ -n "${sent[$id]:-}" ] \
      && awk -v s="${start_of[$id]}" -v k="$killed_at" 'BEGIN { exit !(s < k) }'; then
      cut=$((cut + 1))
    else
      bad+=("$id ${code_of[$id]} upstream=$ups sent=${sent[$id]:-} started=$(awk -v s="${start_of[$id]}" -v k="$killed_at" 'BEGIN { printf "%+.2fs", s - k }') from the kill")
    fi
  fi
done
echo "      $total runs: $ok answered 200 at once, $cut were in flight on $victim when it died, $retried were passed on by nginx after a refused connection"
[ "${#bad[@]}" = 0 ] && [ "$other_errors" = 0 ] && [ "$cut" -gt 0 ] \
  && pass "under load: every run answered 200 but the $cut in flight on $victim when it died (502, sent once, not passed on)" \
  || fail "under load: ${#bad[@]} runs answered otherwise, $other_errors nginx errors on other replicas, $cut in flight on $victim (0: the check proves nothing): ${bad[*]}"
[ "$retried" -gt 0 ] && pass "$retried POSTs refused by the dead $victim were passed on by nginx and answered 200; none was passed on after it had been sent" \
  || fail "no POST was passed on after a refused connection (the refusal path was not exercised)"

# The client side of the cut runs: retried with the same Idempotency-Key, which
# the dead replica's in-flight mark holds (409) until it expires, 5 s after its
# last heartbeat; so does its lease of the run's session.
if [ "$cut" -gt 0 ]; then
  gave_up=$(grep -c gave-up "$work/retries.txt" || true)
  codes=$(awk '{ print $3 }' "$work/retries.txt" | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }')
  replayed=$(awk '$3 == 200 && $5 == "true"' "$work/retries.txt" | wc -l)
  answered=$(awk -v k="$killed_at" '$3 == 200 { if ($2 + $4 - k > m) m = $2 + $4 - k } END { printf "%.1f", m }' "$work/retries.txt")
  [ "$gave_up" = 0 ] && pass "the $cut cut runs, retried with their Idempotency-Key: $codes ($replayed answered from a stored result); all answered 200 within ${answered}s of the kill" \
    || fail "$gave_up cut runs never got a 200 when retried ($codes)"
fi
slowest=$(awk -v k="$killed_at" '$2 > k && $3 == 200 { if ($4 > m) m = $4 } END { printf "%.2f", m }' "$work/load.txt")
awk -v m="$slowest" 'BEGIN { exit !(m < 10) }' \
  && pass "slowest first attempt started after the kill: ${slowest}s" \
  || fail "a run started after the kill took ${slowest}s"

# Every run id that got a 200 (at once, on retry, or replayed) is one turn of its
# worker's session: nothing lost, nothing doubled.
turns_of() { # session-id
  local cursor="" n=0 page
  while :; do
    page=$(curl -s "$proxy/api/v3/agents/$agent/sessions/$1?limit=100${cursor:+&cursor=$cursor}" "${auth[@]}")
    n=$((n + $(jq '.data.turns | length' <<<"$page")))
    cursor=$(jq -r '.data.next_cursor // empty' <<<"$page")
    [ -n "$cursor" ] || break
  done
  echo "$n"
}
mismatch=""
for w in 1 2 3 4 5 6; do
  ids=$(grep -c "^kill-$w-" "$work/load.txt" || true)
  turns=$(turns_of "load-$w")
  [ "$ids" = "$turns" ] || mismatch+=" load-$w: $ids runs, $turns turns;"
done
[ -z "$mismatch" ] && pass "each of the 6 load sessions has exactly one turn per run id ($total runs)" || fail "load sessions:$mismatch"

conns=$(awk -F'|' '{ if ($2 > m[$1]) m[$1] = $2 } END { for (a in m) print a "=" m[a] }' "$work/conns.txt" | sed "s/^$schema-//" | sort | tr '\n' ' ')
awk -F'|' '$2 > 6 { exit 1 }' "$work/conns.txt" \
  && pass "PostgreSQL connections per replica under load (pg_stat_activity, at most): ${conns% }; max_conns 4 + writer + listener = 6" \
  || fail "a replica had more than max_conns + 2 = 6 connections: ${conns% }"

# The holds of the runs that died with agentd-2 expire after run_timeout +
# min(run_timeout, 1m) = 20 s and the sweeper (every 1 s) ends them.
released=""
while awk -v k="$killed_at" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n - k < 45) }'; do
  b=$(curl -s "$proxy/api/v3/billing" "${auth[@]}")
  if [ "$(jq -r .data.holds_in_flight <<<"$b")" = 0 ]; then
    released=$(awk -v k="$killed_at" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - k }')
    break
  fi
  sleep 0.5
done
[ -n "$released" ] && pass "no hold left $released s after the kill (balance $(jq -r .data.balance <<<"$b"), held $(jq -r .data.held <<<"$b"))" \
  || fail "holds still in flight 45 s after the kill: $b"

echo "--- agentd-2 restarted (as compose's restart: unless-stopped would)"
start_replica agentd-2 127.0.0.12 "$dsn" AGENTD_BOOTSTRAP_KEY="$key"
wait_ready http://127.0.0.12:8080/readyz && pass "agentd-2 is ready again" || fail "agentd-2 did not get ready after the restart"
# nginx tries it again once fail_timeout (10 s) has passed since its last failure
# (a refused probe disables it for another 10 s).
restarted_at=$EPOCHREALTIME
back=""
for i in $(seq 100); do
  curl -s -o /dev/null "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" -H "X-Request-ID: probe-$i" -d '{"message": "hello"}'
  if [ "$(served_by "probe-$i")" = "$victim_addr" ]; then
    back=$(awk -v s="$restarted_at" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }')
    break
  fi
  sleep 0.2
done
[ -n "$back" ] && pass "nginx sends runs to agentd-2 again ${back}s after its restart" || fail "nginx sent nothing to agentd-2 in the 20 s after its restart"
ok=0
for i in $(seq 12); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" \
    -H "X-Request-ID: rejoin-$i" -d '{"message": "hello"}')
  [ "$code" = 200 ] && ok=$((ok + 1))
done
counts=$(per_replica rejoin-)
[ "$ok" = 12 ] && all_three "$counts" && pass "12 of 12 runs through nginx answered 200, agentd-2 among the replicas again: $counts" \
  || fail "after the restart: $ok of 12 answered 200; by replica $counts"

echo "--- the database unavailable for 7 s: the replicas' role loses LOGIN and its connections are ended"
# Longer than the 5 s TTL of the key and agent caches, so that requests need the
# database for their key and agent too, not only for their writes.
sql "ALTER ROLE $role NOLOGIN" >/dev/null
sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '$role'" >/dev/null
outage_at=$EPOCHREALTIME
: >"$work/outage.txt"
i=0
# One line per sample: seconds into the outage, /readyz of agentd-1..3, then a run
# and GET /api/v3/billing through nginx, each as status/code-in-the-body/seconds.
probe() { # request-id url [curl args...]
  local id=$1 url=$2 out
  shift 2
  out=$(curl -s --max-time 10 -o "$work/outage-body" -w '%{http_code} %{time_total}' "$url" "${auth[@]}" -H "X-Request-ID: $id" "$@") || true
  echo "${out% *}/$(jq -r '.code // "none"' "$work/outage-body" 2>/dev/null || echo not-json)/${out#* }"
}
while awk -v s="$outage_at" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n - s < 7) }'; do
  i=$((i + 1))
  line="$(awk -v s="$outage_at" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", n - s }')"
  for a in "${addrs[@]}"; do line+=" $(curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://$a:8080/readyz")"; done
  line+=" run=$(probe "outage-run-$i" "$proxy/api/v3/agents/run-agents/turns/run" -d '{"message": "hello"}')"
  line+=" billing=$(probe "outage-billing-$i" "$proxy/api/v3/billing")"
  echo "$line" >>"$work/outage.txt"
  sleep 0.3
done
samples=$(wc -l <"$work/outage.txt")
readyz_503=$(grep -c '^[^ ]* 503 503 503 ' "$work/outage.txt" || true)
runs_503=$(grep -c ' run=503/unavailable/' "$work/outage.txt" || true)
billing_503=$(grep -c ' billing=503/unavailable/' "$work/outage.txt" || true)
passed_on=$(grep -cE ' request_id=outage-[a-z]+-[0-9]+ upstream=[^ ]+, ' "$work/nginx.log" || true)
summary() { # column: "N× status/code" for each outcome, in order of first appearance
  sed -n "s/.* $1=\([^/]*\/[^/]*\)\/.*/\1/p" "$work/outage.txt" | uniq -c | awk '{ printf "%s%s×%s", sep, $1, $2; sep = ", " }'
}
echo "      $samples samples over 7 s; runs through nginx: $(summary run); GET /api/v3/billing through nginx: $(summary billing)"
internal=$(cat "$work"/agentd-?.log | grep 'msg="internal error"' | sed 's/.* path=\([^ ]*\) err="\([^:(]*\).*/\1 \2/' \
  | sort | uniq -c | awk '{ printf "%s%s× %s on %s", sep, $1, $3, $2; sep = ", " }')
[ -n "$internal" ] && echo "      agentd's 'internal error' log lines meanwhile: $internal"
[ "$readyz_503" = "$samples" ] && pass "during the outage /readyz is 503 on all 3 replicas ($samples of $samples samples)" \
  || fail "during the outage /readyz is 503 on all 3 replicas in only $readyz_503 of $samples samples"
[ "$runs_503" = "$samples" ] && [ "$billing_503" = "$samples" ] && [ "$passed_on" = 0 ] \
  && pass "during the outage every run and every GET /api/v3/billing through nginx answered agentd's 503 unavailable, none passed on to another replica" \
  || fail "during the outage: runs 503 unavailable in $runs_503 of $samples samples, GET /api/v3/billing in $billing_503 of $samples; $passed_on passed on to another replica (agentd: see the 'internal error' lines of its log)"
sql "ALTER ROLE $role LOGIN" >/dev/null
back_at=$EPOCHREALTIME
up=0
for a in "${addrs[@]}"; do wait_ready "http://$a:8080/readyz" && up=$((up + 1)); done
took=$(awk -v s="$back_at" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }')
ok=0
for i in $(seq 9); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" -H "X-Request-ID: back-$i" -d '{"message": "hello"}')" = 200 ] && ok=$((ok + 1))
done
counts=$(per_replica back-)
[ "$up" = 3 ] && [ "$ok" = 9 ] && all_three "$counts" \
  && pass "LOGIN back: all 3 replicas ready again by themselves within ${took}s; 9 of 9 runs through nginx answered 200 ($counts)" \
  || fail "after the outage: $up of 3 ready after ${took}s, $ok of 9 runs answered 200 ($counts)"

out=$("$work/agentd" check --db "$dsn" 2>&1) && pass "$out" || fail "agentd check: $out"

stopped=0
for r in agentd-1 agentd-2 agentd-3; do stop_replica "$r" && stopped=$((stopped + 1)); done
[ "$stopped" = 3 ] && pass "the 3 replicas exited 0 on SIGTERM" || fail "$stopped of 3 replicas exited 0 on SIGTERM"
out=$(curl -s -w ' %{http_code}' "$proxy/api/v3/agents/run-agents/turns/run" "${auth[@]}" -d '{"message": "anyone?"}')
[[ $out == *'"code":"unavailable"'*' 502' ]] && pass "no replica up: nginx answers 502 in agentd's JSON" || fail "no replica up: $out"

echo "--- nginx's error log, and the access log lines of runs that were cut or passed on"
grep -v ' request_id=' "$work/nginx.log" | grep -v '^nginx: ' || true
grep -E ' request_id=kill-[0-9]+-[0-9]+ ' "$work/nginx.log" | grep -E 'upstream=[^ ]+, |" 50[0-9] ' || true
if [ "$failures" -gt 0 ]; then
  echo "smoke: $failures check(s) failed"
  exit 1
fi
echo "smoke: ok"
