#!/usr/bin/env bash
# Runs deploy/nginx.conf in front of two agentd processes on SQLite and checks what
# the file promises: proxying across replicas, a refused replica skipped, events
# streamed unbuffered, the body limit, nginx's errors as JSON, and a replica that
# drains on SIGTERM while a stream is open. docs/deploy.md records its output.
#
#   sudo bash deploy/nginx-smoke.sh        # needs root, nginx, curl and Go
#
# Everything listens on loopback. The upstream names agentd-1..3 resolve through a
# private /etc/hosts (a bind mount in nginx's own mount namespace) to 127.0.0.11-13;
# agentd-3 is left down. The only changes to the copy nginx runs are its listen
# address (127.0.0.1:8080, since 0.0.0.0:8080 would collide with the replicas'
# 127.0.0.1x:8080) and its pid file; the diff is printed.
# deploy/nginx-smoke-postgres.sh runs the same file in front of three replicas on
# one PostgreSQL database.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in nginx curl go unshare ss; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "smoke: run as root (unshare -m, mount --bind)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then echo "smoke: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

failures=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }

key=agd_smoke_0123456789abcdef
proxy=http://127.0.0.1:8080

echo "--- build (the Dockerfile's command)"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/agentd" ./cmd/agentd
go build -o "$work/agentd-bench" ./cmd/agentd-bench
"$work/agentd" version

echo "--- upstream: 8 pieces, 500 ms apart"
"$work/agentd-bench" upstream --addr 127.0.0.1:18000 --tokens 8 --stream-interval 500ms >"$work/upstream.log" 2>&1 &
pids+=($!)

cat >"$work/agentd.yaml" <<'EOF'
providers:
  - name: slow
    kind: openai
    base_url: http://127.0.0.1:18000/v1
models:
  - id: gpt-4o-mini
    provider: slow
    context_window: 8192
    max_output_tokens: 1024
    price: {input: 0, output: 0}
EOF

declare -A replica_pid
start_replica() { # name address
  AGENTD_BOOTSTRAP_KEY=$key "$work/agentd" serve --addr "$2" --db "sqlite:$work/$1.db" \
    --config "$work/agentd.yaml" >"$work/$1.log" 2>&1 &
  replica_pid[$1]=$!
  pids+=($!)
}
start_replica agentd-1 127.0.0.11:8080
start_replica agentd-2 127.0.0.12:8080

wait_ready() { # url
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
for a in 127.0.0.11 127.0.0.12; do
  wait_ready "http://$a:8080/readyz" || { echo "smoke: agentd on $a did not get ready" >&2; exit 1; }
done

# Each replica has its own database, so the agent is created on each directly.
for a in 127.0.0.11 127.0.0.12; do
  curl -sf "http://$a:8080/api/v3/agents/create" -H "Authorization: Bearer $key" \
    -d '{"agent_name": "streamer", "agent_description": "streams", "model": "gpt-4o-mini"}' >/dev/null
done

cat /etc/hosts - >"$work/hosts" <<'EOF'
127.0.0.11 agentd-1
127.0.0.12 agentd-2
127.0.0.13 agentd-3
EOF
sed -e 's|^\( *\)listen 8080;|\1listen 127.0.0.1:8080;|' -e "s|^pid /tmp/nginx.pid;|pid $work/nginx.pid;|" \
  deploy/nginx.conf >"$work/nginx.conf"
echo "--- the copy nginx runs differs from deploy/nginx.conf only in:"
diff deploy/nginx.conf "$work/nginx.conf" || true

# A control: nginx's defaults (HTTP/1.0 to the upstream, responses buffered) with
# agentd's X-Accel-Buffering: no ignored, as a proxy that drops the header would
# have it. It must hold the stream back, or the stream check proves nothing.
cat >"$work/nginx-defaults.conf" <<EOF
pid $work/nginx-defaults.pid;
error_log /dev/stderr warn;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:8081;
        location / {
            proxy_pass http://127.0.0.11:8080;
            proxy_ignore_headers X-Accel-Buffering;
        }
    }
}
EOF

# Runs a command with the private /etc/hosts. It execs, so that a backgrounded
# call's pid ($!) is the command's own and cleanup ends it.
in_hosts_ns() { # command...
  exec unshare -m --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$work/hosts" "$@"
}

echo "--- nginx -t on deploy/nginx.conf itself"
(in_hosts_ns nginx -t -c "$PWD/deploy/nginx.conf")

# Waits for nginx's listener without a request, which would leave an idle
# connection to a replica open.
start_nginx() { # config log port
  in_hosts_ns nginx -c "$1" -g 'daemon off;' >"$2" 2>&1 &
  nginx_pid=$!
  pids+=($!)
  for _ in $(seq 100); do
    [ -n "$(ss -Hltn "sport = :$3")" ] && return 0
    sleep 0.1
  done
  echo "smoke: nginx -c $1 did not start" >&2
  cat "$2" >&2
  exit 1
}
start_nginx "$work/nginx-defaults.conf" "$work/nginx-defaults.log" 8081
start_nginx "$work/nginx.conf" "$work/nginx.log" 8080

echo "--- checks"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$proxy/readyz")" = 200 ] && pass "/readyz through nginx is 200" || fail "/readyz through nginx"

chat='{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}'
ok=0
for i in 1 2 3 4 5 6; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/v1/chat/completions" -H "Authorization: Bearer $key" \
    -H "X-Request-ID: smoke-$i" -d "$chat")
  [ "$code" = 200 ] && ok=$((ok + 1))
done
[ "$ok" = 6 ] && pass "6 of 6 POSTs answered 200" || fail "$ok of 6 POSTs answered 200"
grep -q 'upstream=127.0.0.11:8080' "$work/nginx.log" && grep -q 'upstream=127.0.0.12:8080' "$work/nginx.log" \
  && pass "both replicas served requests" || fail "not both replicas served requests"
grep -q 'upstream=127.0.0.13:8080, ' "$work/nginx.log" \
  && pass "a POST refused by agentd-3 (down) went on to another replica: $(grep -o 'upstream=127.0.0.13:8080, [^ ]*' "$work/nginx.log" | head -1)" \
  || fail "no request was passed on from agentd-3"
grep -q 'request_id=smoke-3 ' "$work/nginx.log" && pass "X-Request-ID is logged" || fail "X-Request-ID is not in the access log"

# Prints "first_data_seconds total_seconds lines" of a stream through URL.
stream_times() { # base-url path body
  local start line first="" n=0
  start=$EPOCHREALTIME
  while IFS= read -r line; do
    if [ -z "$first" ] && [[ $line == data:* ]]; then first=$EPOCHREALTIME; fi
    n=$((n + 1))
  done < <(curl -sN "$1$2" -H "Authorization: Bearer $key" -d "$3")
  awk -v s="$start" -v f="${first:-$EPOCHREALTIME}" -v e="$EPOCHREALTIME" -v n="$n" \
    'BEGIN { printf "%.2f %.2f %d\n", f - s, e - s, n }'
}
check_stream() { # label path body
  read -r first total lines < <(stream_times "$proxy" "$2" "$3")
  echo "      $1: first data: after ${first}s, stream ended after ${total}s, $lines lines"
  if awk -v f="$first" -v t="$total" 'BEGIN { exit !(f < 1.5 && t > 3 && t - f > 2) }'; then
    pass "$1: the first event arrived seconds before the end"
  else
    fail "$1: the stream arrived buffered"
  fi
}
check_stream "run stream" /api/v3/agents/run-agents/streamer/run '{"message": "hello", "stream": true}'
check_stream "chat completion stream" /v1/chat/completions \
  '{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hello"}]}'
read -r first total lines < <(stream_times http://127.0.0.1:8081 /api/v3/agents/run-agents/streamer/run '{"message": "hello", "stream": true}')
echo "      control (nginx's defaults, X-Accel-Buffering ignored): first data after ${first}s, ended after ${total}s"
awk -v f="$first" -v t="$total" 'BEGIN { exit !(t > 3 && t - f < 0.5) }' \
  && pass "control: nginx's defaults hold the first event until the end (so the check above can fail)" \
  || fail "control: nginx's defaults did not delay the stream, so the stream check proves nothing"

body=$(mktemp -p "$work")
head -c 1048577 /dev/zero | tr '\0' 'a' >"$body"
out=$(curl -s -w ' %{http_code}' "$proxy/v1/chat/completions" -H "Authorization: Bearer $key" --data-binary "@$body")
[[ $out == *'"code":"payload_too_large"'*' 413' ]] && pass "1 MiB + 1 byte: nginx answers 413 in agentd's JSON" || fail "1 MiB + 1 byte: $out"
head -c 1048576 /dev/zero | tr '\0' 'a' >"$body"
code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/api/v3/agents/run-agents/streamer/run" -H "Authorization: Bearer $key" --data-binary "@$body")
[ "$code" != 413 ] && pass "exactly 1 MiB passes nginx to agentd, which answers $code (the body is not JSON)" || fail "exactly 1 MiB got 413"

echo "--- drain: SIGTERM the replica serving an open stream"
# A fresh nginx has no idle upstream connections, so the stream's is the only one.
kill "$nginx_pid"
wait "$nginx_pid" 2>/dev/null || true
start_nginx "$work/nginx.conf" "$work/nginx-drain.log" 8080
curl -sN "$proxy/api/v3/agents/run-agents/streamer/run" -H "Authorization: Bearer $key" \
  -d '{"message": "hello", "stream": true}' >"$work/drain-stream.txt" &
stream_pid=$!
sleep 1
serving=$(ss -Htn state established '( dst 127.0.0.11:8080 or dst 127.0.0.12:8080 )' | awk '{ print $4 }' | sort -u)
case "$serving" in
  127.0.0.11:8080) victim=agentd-1 ;;
  127.0.0.12:8080) victim=agentd-2 ;;
  *) victim="" ;;
esac
if [ -z "$victim" ]; then
  fail "could not tell which replica serves the stream (connections: ${serving:-none})"
else
  kill -TERM "${replica_pid[$victim]}"
  ok=0
  for i in 1 2 3 4; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/v1/chat/completions" -H "Authorization: Bearer $key" -d "$chat")
    [ "$code" = 200 ] && ok=$((ok + 1))
  done
  [ "$ok" = 4 ] && pass "while $victim drains, 4 of 4 new POSTs answered 200" || fail "while $victim drains, $ok of 4 POSTs answered 200"
  wait "$stream_pid" || true
  grep -q '^event: done' "$work/drain-stream.txt" && tail -n 2 "$work/drain-stream.txt" | grep -q '^data: \[DONE\]' \
    && pass "the open stream on $victim finished (event: done, data: [DONE])" || fail "the stream on $victim was cut"
  if wait "${replica_pid[$victim]}"; then pass "$victim exited 0 after draining"; else fail "$victim exited non-zero"; fi
fi

for r in agentd-1 agentd-2; do
  out=$("$work/agentd" check --db "sqlite:$work/$r.db" 2>&1) && pass "agentd check $r: ${out##*$'\n'}" || fail "agentd check $r: $out"
done

kill "${replica_pid[agentd-1]}" "${replica_pid[agentd-2]}" 2>/dev/null || true
wait "${replica_pid[agentd-1]}" "${replica_pid[agentd-2]}" 2>/dev/null || true
out=$(curl -s -w ' %{http_code}' "$proxy/v1/chat/completions" -H "Authorization: Bearer $key" -d "$chat")
[[ $out == *'"code":"unavailable"'*' 502' ]] && pass "no replica up: nginx answers 502 in agentd's JSON" || fail "no replica up: $out"

echo "--- nginx access and error log, first nginx"
cat "$work/nginx.log"
echo "--- nginx access and error log, the nginx of the drain"
cat "$work/nginx-drain.log"
if [ "$failures" -gt 0 ]; then
  echo "smoke: $failures check(s) failed"
  exit 1
fi
echo "smoke: ok"
