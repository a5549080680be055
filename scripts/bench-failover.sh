#!/bin/bash
# scripts/bench-failover.sh WHAT [atlas bench send flags]: three replicas on one new
# PostgreSQL database and a redis-server of their own (port 6390), loaded by one
# `atlas bench send --verify` over all three; halfway through the run
#   WHAT=none    nothing happens (the baseline),
#   WHAT=replica replica 2 is killed with SIGKILL,
#   WHAT=redis   Redis is killed with SIGKILL and restarted 3 s later.
# Prints the bench's report and its progress, one line per half second.
# Needs psql and PostgreSQL at 127.0.0.1:5432 (user postgres), redis-server; ATLAS_BIN.
BIN=${ATLAS_BIN:-atlas}; WHAT=${1:?none|replica|redis}; shift
WARMUP=3; DURATION=20
D=$(mktemp -d /tmp/fo.XXXX)
DBN=fo_$RANDOM$RANDOM; psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DBN" >/dev/null
redis_up() { redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no > /dev/null 2>&1 & RP=$!; sleep 0.3; }
redis_up
PIDS=(); SERVERS=(); PIDARGS=()
for i in 0 1 2; do
  PORT=$((18300+i)); mkdir -p $D/r$i
  $BIN serve --data-dir $D/r$i --listen 127.0.0.1:$PORT --public-url https://api.atlas.dev \
    --database-url postgres://postgres@127.0.0.1:5432/$DBN --kek-file $D/kek --redis-url redis://127.0.0.1:6390 \
    --registrations-per-minute 100000 --tokens-per-minute 100000 > $D/serve-$i.log 2>&1 &
  PIDS+=($!); SERVERS+=(--server http://127.0.0.1:$PORT); PIDARGS+=(--server-pid $!)
  for k in $(seq 50); do curl -sf http://127.0.0.1:$PORT/livez >/dev/null && break; sleep 0.2; done
done
$BIN bench send "${SERVERS[@]}" --public-url https://api.atlas.dev "${PIDARGS[@]}" \
  --warmup ${WARMUP}s --duration ${DURATION}s --verify --json "$@" > $D/report.json 2> $D/progress.txt &
BP=$!
# Halfway through the measured time (registration first: wait for the warm-up line).
until grep -q "warm-up" $D/progress.txt 2>/dev/null; do sleep 0.1; done
sleep $((WARMUP + DURATION / 2))
case $WHAT in
  replica) kill -9 ${PIDS[2]}; echo "SIGKILL replica 2 at $(date +%T.%N)" >&2 ;;
  redis) kill -9 $RP; echo "SIGKILL redis at $(date +%T.%N)" >&2; sleep 3; redis_up; echo "redis back at $(date +%T.%N)" >&2 ;;
esac
wait $BP; echo "bench exit code $?"
cat $D/report.json
tr '\r' '\n' < $D/progress.txt | grep -E "measuring|warm-up" | awk 'NR%1==0'
for p in ${PIDS[@]}; do kill $p 2>/dev/null; done; wait ${PIDS[@]} 2>/dev/null
kill $RP 2>/dev/null
rm -rf $D
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $DBN" >/dev/null
true
