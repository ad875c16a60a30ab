#!/usr/bin/env bash
# deploy/k8s validated against the Kubernetes API schemas by kubernetes-models
# (tests/k8s/validate.mjs), and broken copies of it rejected, naming the field.
#   tests/k8s/manifests.sh WORKDIR
# WORKDIR (the build tree) holds the installed validator: npm ci from the
# committed package-lock.json, redone only when the lock changes; npm's cache
# is WORKDIR/npm-cache unless npm_config_cache says otherwise, so a rerun
# needs no network.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
W=${1:?usage: manifests.sh WORKDIR}/k8s-validate
for t in node npm; do
    command -v $t >/dev/null || { echo "$t missing (deploy/install-deps.sh --test)"; exit 77; }
done
mkdir -p "$W"
export HOME=${HOME:-$W} npm_config_cache=${npm_config_cache:-$W/npm-cache}
# npm trusts what the system trusts (a machine behind a TLS-inspecting proxy
# has its CA there, not in node's own list).
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi
cp "$HERE/validate.mjs" "$HERE/package.json" "$HERE/package-lock.json" "$W/"
if ! cmp -s "$W/package-lock.json" "$W/.installed-lock" || [ ! -d "$W/node_modules" ]; then
    if ! (cd "$W" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) >"$W/npm.log" 2>&1; then
        cat "$W/npm.log"
        # Only an unreachable registry is a reason to skip; any other failure fails.
        if grep -Eq 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|CERT|certificate' \
            "$W/npm.log"; then
            echo "SKIPPED: the npm registry cannot be reached from here, so the validator cannot be installed"
            exit 77
        fi
        echo "npm ci failed"
        exit 1
    fi
    cp "$W/package-lock.json" "$W/.installed-lock"
fi

pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
T=$(mktemp -d /tmp/kiln-k8s-XXXXXX)
trap 'rm -rf "$T"' EXIT

M=$SRC/deploy/k8s/kiln.yaml
if node "$W/validate.mjs" "$M" >"$T/out" 2>"$T/err"; then ok; else bad "the manifest is invalid: $(cat "$T/err")"; fi
for k in StatefulSet Service PodDisruptionBudget NetworkPolicy; do
    grep -q " $k kiln\$" "$T/out" && ok || bad "$k validated ($(cat "$T/out"))"
done

# reject NAME SED-EXPR FIELD: a copy changed by SED-EXPR fails, naming FIELD.
reject() {
    local name=$1 expr=$2 field=$3
    sed "$expr" "$M" > "$T/$name.yaml"
    cmp -s "$M" "$T/$name.yaml" && { bad "$name: the edit changed nothing"; return; }
    node "$W/validate.mjs" "$T/$name.yaml" >"$T/out" 2>"$T/err"; local rc=$?
    [ "$rc" = 1 ] && grep -q "$field" "$T/err" && ok \
        || bad "$name: exit $rc, want 1 naming $field ($(cat "$T/err"))"
}
reject replicas-string 's/replicas: 3/replicas: "three"/' 'spec/replicas must be integer'
reject port-string 's/containerPort: 7403 }/containerPort: "rpc" }/' 'containerPort'
reject no-selector '/^  selector:$/,/^    matchLabels: { app.kubernetes.io\/name: kiln }$/d' 'selector'
reject bad-kind 's/^kind: PodDisruptionBudget$/kind: PodDisruptionBudgett/' 'unknown apiVersion/kind'
reject bad-yaml '0,/^  serviceName: kiln$/s//  serviceName: kiln\n  serviceName: again/' 'YAML'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
