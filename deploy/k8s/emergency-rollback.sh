#!/usr/bin/env bash
# The seed's emergency-rollback.sh (004 §3.2) for atlas-gateway.
#
# What makes the rollback safe is the schema, not this script: a release's
# migrations only add, and the database records the oldest binary that can
# serve it (`atlas db status`). The previous image starts on the newer schema;
# an image below the recorded floor refuses to start with a clear message, so
# `rollout status` fails here instead of the old binary corrupting data.
#
# Needs: kubectl; optional ATLAS_URL (default http://atlas-gateway.atlas) and
# SLACK_WEBHOOK_URL.
set -euo pipefail

NAMESPACE="${NAMESPACE:-atlas}"
DEPLOYMENT="atlas-gateway"
TARGET_REVISION="${1:-}"
ATLAS_URL="${ATLAS_URL:-http://atlas-gateway.$NAMESPACE}"

notify() {
  [ -n "${SLACK_WEBHOOK_URL:-}" ] || return 0
  python3 -c 'import json,sys; print(json.dumps({"text": sys.argv[1]}))' "$1" |
    curl -sS -X POST "$SLACK_WEBHOOK_URL" -H 'Content-type: application/json' --data @- > /dev/null || true
}

echo "=========================================="
echo "⚠️  EMERGENCY ROLLBACK"
echo "=========================================="

echo "Current deployment:"
kubectl get deployment "$DEPLOYMENT" -n "$NAMESPACE" \
  -o jsonpath='{.spec.template.spec.containers[0].image}'
echo ""

echo "Schema (which binaries can serve the database):"
kubectl exec -n "$NAMESPACE" "deploy/$DEPLOYMENT" -- atlas db status || true

echo "Rollout history:"
kubectl rollout history "deployment/$DEPLOYMENT" -n "$NAMESPACE"

if [ -z "$TARGET_REVISION" ]; then
  echo ""
  echo "Rolling back to previous revision..."
  kubectl rollout undo "deployment/$DEPLOYMENT" -n "$NAMESPACE"
else
  echo ""
  echo "Rolling back to revision $TARGET_REVISION..."
  kubectl rollout undo "deployment/$DEPLOYMENT" -n "$NAMESPACE" --to-revision="$TARGET_REVISION"
fi

echo "Waiting for rollback (timeout: 5 min)..."
if ! kubectl rollout status "deployment/$DEPLOYMENT" -n "$NAMESPACE" --timeout=300s; then
  echo "❌ Rollback failed! Manual intervention required."
  echo "   A binary older than the schema's floor refuses to start: kubectl logs -n $NAMESPACE -l app=$DEPLOYMENT | grep 'needs atlas'"
  notify "❌ Atlas emergency rollback FAILED: manual intervention required"
  exit 1
fi

sleep "${HEALTH_WAIT:-10}"
if curl -sf "$ATLAS_URL/health" > /dev/null; then
  echo "✅ Rollback successful - service healthy"
  notify "🔄 Atlas emergency rollback completed: service healthy"
else
  echo "⚠️  Rollback complete but health check failing"
  notify "⚠️ Atlas emergency rollback completed but /health is failing"
  exit 2
fi
