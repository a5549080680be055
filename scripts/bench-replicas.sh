#!/bin/bash
# scripts/bench-replicas.sh MODE N [atlas bench send flags]: N replicas (MODE sqlite: one;
# pg: on one new PostgreSQL database; pgredis: and a redis-server of its own on
# 6390), one `atlas bench send` per replica at once, the sums printed as JSON.
# Needs psql and PostgreSQL at 127.0.0.1:5432 (user postgres), redis-server; ATLAS_BIN.
BIN=${ATLAS_BIN:-atlas}; MODE=${1:?sqlite|pg|pgredis}; N=${2:?replicas}; shift 2
D=$(mktemp -d /tmp/mb.XXXX)
EXTRA=""
if [ "$MODE" != sqlite ]; then
  DBN=mb_$RANDOM$RANDOM; psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DBN" >/dev/null
  EXTRA="--database-url postgres://postgres@127.0.0.1:5432/$DBN --kek-file $D/kek"
fi
if [ "$MODE" = pgredis ]; then
  redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize no > /dev/null 2>&1 &
  RP=$!; sleep 0.5
  EXTRA="$EXTRA --redis-url redis://127.0.0.1:6390"
fi
PIDS=(); PORTS=()
for i in $(seq 0 $((N-1))); do
  PORT=$((18200+i)); mkdir -p $D/r$i
  $BIN serve --data-dir $D/r$i --listen 127.0.0.1:$PORT --registrations-per-minute 100000 --tokens-per-minute 100000 $EXTRA > /tmp/mb-serve-$i.log 2>&1 &
  PIDS+=($!); PORTS+=($PORT)
  for k in $(seq 50); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.2; done
done
rcpu() { [ -n "$RP" ] && awk '{print $14+$15}' /proc/$RP/stat; }
R0=$(rcpu)
BP=()
for i in $(seq 0 $((N-1))); do
  $BIN bench send --server http://127.0.0.1:${PORTS[$i]} --server-pid ${PIDS[$i]} --json "$@" > $D/out$i.json 2>/dev/null &
  BP+=($!)
done
wait ${BP[@]}
R1=$(rcpu)
python3 - $D $N "$R0" "$R1" <<'PY'
import json,sys,os
d,n=sys.argv[1],int(sys.argv[2])
rs=[json.load(open(f"{d}/out{i}.json")) for i in range(n)]
msgs=sum(r["messages"] for r in rs); secs=rs[0]["seconds"]
cpu=sum((r["server_cpu_us_per_message"] or 0)*r["messages"] for r in rs)/max(msgs,1)
p50=max(r["latency_ms"]["p50"] for r in rs); p99=max(r["latency_ms"]["p99"] for r in rs)
errs={}
for r in rs:
  for k,v in r["errors"].items(): errs[k]=errs.get(k,0)+v
out=dict(replicas=n, msgs_per_s=round(msgs/secs), p50_max=p50, p99_max=p99, server_cpu_us=round(cpu), errors=errs)
if sys.argv[3]:
  # Redis CPU ticks (1/100 s) over the whole run, warm-up included: an upper bound.
  out["redis_cpu_us_per_msg_upper"]=round((int(sys.argv[4])-int(sys.argv[3]))*10000/max(msgs,1),1)
print(json.dumps(out))
PY
for p in ${PIDS[@]}; do kill $p; done; wait ${PIDS[@]} 2>/dev/null
[ -n "$RP" ] && kill $RP
rm -rf $D
[ "$MODE" != sqlite ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE $DBN" >/dev/null
true
