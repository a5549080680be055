#!/usr/bin/env bash
# Renders every overlay with Kustomize, validates the output against the
# Kubernetes schemas (kubernetes-validate, strict) and lints the YAML; checks
# that the runbooks' lines fit (`kubectl logs -l app=atlas-gateway -n atlas`).
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
yamllint -c ../../.yamllint.yml --strict .
# The emergency half (seed 004 §3): the policy validates, the scripts parse
# (and pass shellcheck where it is installed).
kubernetes-validate --strict --quiet -k 1.32.0 emergency/networkpolicy-deny-all.yaml
kubernetes-validate --strict --quiet -k 1.32.0 dr/restore-job.yaml
for script in emergency/emergency-shutdown.sh emergency-rollback.sh; do
  bash -n "$script"
  if command -v shellcheck > /dev/null; then shellcheck "$script"; fi
done
for overlay in overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  kubernetes-validate --strict --quiet -k 1.32.0 "$out/$name.yaml"
  yamllint -d '{extends: default, rules: {line-length: disable, document-start: disable, indentation: disable}}' "$out/$name.yaml"
  python3 - "$out/$name.yaml" "$name" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
deploy = [d for d in docs if d["kind"] == "Deployment"]
assert len(deploy) == 1, "one Deployment"
d = deploy[0]
assert d["metadata"]["name"] == "atlas-gateway" and d["metadata"]["namespace"] == "atlas"
assert d["spec"]["template"]["metadata"]["labels"]["app"] == "atlas-gateway"
c = d["spec"]["template"]["spec"]["containers"][0]
assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["securityContext"]["readOnlyRootFilesystem"] and d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
assert "--log-json" in c["args"]
if sys.argv[2] == "scaled":
    assert d["spec"]["replicas"] >= 3
    env = {e["name"]: e for e in c.get("env", [])}
    for var in ("ATLAS_DATABASE_URL", "ATLAS_REDIS_URL"):
        assert "secretKeyRef" in env[var]["valueFrom"], var
    kinds = {x["kind"] for x in docs}
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "Service", "ConfigMap"} <= kinds, kinds
    # Seed 004 §4: scheduled backups, verified, by the atlas commands.
    cron = [x for x in docs if x["kind"] == "CronJob"]
    assert len(cron) == 1 and cron[0]["metadata"]["name"] == "atlas-backup", cron
    pod = cron[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][:2] == ["dr", "backup"]
    assert pod["containers"][0]["args"][:2] == ["dr", "verify"] and "--record" in pod["containers"][0]["args"]
print(f"{sys.argv[2]}: {len(docs)} resources, the runbooks' selectors fit")
PY
done
