#!/usr/bin/env bash
# The seed's emergency-shutdown.sh (004 §3.1) around `atlas emergency shutdown`.
# USE ONLY IN CRITICAL SECURITY INCIDENTS.
#
# What differs from the seed, and why:
#   - Evidence first, from the servers themselves: `atlas emergency shutdown`
#     saves logs, state, metrics, configuration (no secrets) and the audit
#     checkpoint under a signed MANIFEST; kubectl's logs and state are added
#     next to them. Nothing is force-deleted before it is saved.
#   - The servers are locked down instead of scaled to zero: the client API
#     answers 503 locked_down on every replica, tokens stop, sockets close, and
#     the admin API, /health and the status page stay up for the responders.
#     Pass --scale-to-zero to also stop the pods once the evidence is saved.
#   - The network policy keeps DNS, the database and a forensic path
#     (networkpolicy-deny-all.yaml explains each).
#   - Slack hears it through the open incident's notifications (with retries),
#     not a one-shot curl.
#
# Needs: kubectl, atlas, ATLAS_SERVER (the admin API, reachable from here) and
# ATLAS_ADMIN_TOKEN (scope emergency).
set -euo pipefail

NAMESPACE="${NAMESPACE:-atlas}"
HERE="$(cd "$(dirname "$0")" && pwd)"
SCALE_TO_ZERO=0
[ "${1:-}" = "--scale-to-zero" ] && SCALE_TO_ZERO=1
: "${ATLAS_SERVER:?set ATLAS_SERVER to the admin API URL}"
: "${ATLAS_ADMIN_TOKEN:?set ATLAS_ADMIN_TOKEN (scope emergency)}"

echo "=========================================="
echo "⚠️  EMERGENCY SHUTDOWN INITIATED"
echo "=========================================="

if [ -n "${CONFIRM:-}" ]; then
  confirm="$CONFIRM"
else
  read -r -p "Type 'CONFIRM SHUTDOWN' to proceed: " confirm
fi
[ "$confirm" = "CONFIRM SHUTDOWN" ] || { echo "not confirmed; nothing was done" >&2; exit 1; }

TIMESTAMP=$(date +%Y%m%d_%H%M%S)
EVIDENCE="${EVIDENCE_DIR:-./atlas-evidence}/emergency_$TIMESTAMP"

# Steps 1-3 and 5: evidence, lockdown, sockets, incident timelines and Slack.
atlas emergency shutdown --confirm "$confirm" --evidence-dir "$EVIDENCE" \
  --reason "${REASON:-emergency-shutdown.sh}"

echo "[+] Adding the cluster's view to the evidence ($EVIDENCE/cluster)..."
mkdir -m 700 "$EVIDENCE/cluster"
kubectl logs -n "$NAMESPACE" -l app=atlas-gateway --all-containers --prefix \
  > "$EVIDENCE/cluster/kubectl_logs_$TIMESTAMP.txt" 2>&1 || true
kubectl get all,events -n "$NAMESPACE" -o yaml > "$EVIDENCE/cluster/kubectl_state_$TIMESTAMP.yaml"
(cd "$EVIDENCE/cluster" && sha256sum kubectl_* > SHA256SUMS)

echo "[+] Blocking external traffic..."
kubectl patch svc atlas-gateway -n "$NAMESPACE" -p '{"spec":{"type":"ClusterIP"}}'

echo "[+] Applying the emergency network policy..."
kubectl apply -f "$HERE/networkpolicy-deny-all.yaml"

if [ "$SCALE_TO_ZERO" = 1 ]; then
  echo "[+] Scaling down all pods (evidence already saved)..."
  kubectl scale deployment --all -n "$NAMESPACE" --replicas=0
fi

echo "=========================================="
echo "SHUTDOWN COMPLETE"
echo "Evidence saved to $EVIDENCE (check: atlas emergency verify-evidence $EVIDENCE)"
echo "Contact security team immediately"
echo "=========================================="
