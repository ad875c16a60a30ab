#!/usr/bin/env bash
# kiln build's RUN sandbox flags through both services and the CLI, checked
# from inside RUN with busybox: --add-host lines in /etc/hosts (v4 and v6),
# --ulimit values as `ulimit` reports them, --shm-size as /proc/mounts shows
# /dev/shm (default 64m); bad values fail with exit 2 before any service is
# asked, and a ulimit above the builder's own or a /dev/shm above the RUN
# memory limit is refused before anything runs.  None of the three enters
# the step cache key (Docker's rule).  Layer sizes read "C compressed / U"
# everywhere.  --ssh: a RUN lists and uses the keys of an ssh-agent started
# here, through kiln-probe (busybox has no ssh-add), but cannot remove them;
# a RUN that requires an agent the build lacks fails before anything runs.
# Needs root.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}" "${KILN_PROBE_BIN:?}"
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 77; }
for t in jq busybox ssh-agent ssh-add ssh-keygen; do
    command -v $t >/dev/null || { echo "$t missing"; exit 77; }
done

T=$(mktemp -d /tmp/kiln-runflags-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "${SSH_AGENT_PID:-}" ] && kill "$SSH_AGENT_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

# --- bad values: exit 2 before any service is asked -------------------------
mkdir -p "$T/ctx"
printf 'FROM scratch\n' > "$T/ctx/Dockerfile"
nowhere() { KILN_BUILDER=ipc://$T/nowhere.sock KILN_PUSHER=ipc://$T/nowhere.sock kiln "$@"; }
for v in 'noaddress' 'bad_host-:10.0.0.1' '-x:10.0.0.1' 'a..b:10.0.0.1' 'h:999.1.1.1' 'h:10.0.0' \
    'h:fd00::zz' 'h:host-gateway' ':10.0.0.1'; do
    expect_rc 2 "--add-host $v" nowhere build --add-host "$v" "$T/ctx"
    grep -q "add-host" "$T/err" && ok || bad "--add-host $v: message ($(cat "$T/err"))"
done
for v in 'nofile' 'nofiles=10' 'nofile=x' 'nofile=20:10' 'nofile=10:y' 'nproc=-2'; do
    expect_rc 2 "--ulimit $v" nowhere build --ulimit "$v" "$T/ctx"
    grep -q "ulimit" "$T/err" && ok || bad "--ulimit $v: message ($(cat "$T/err"))"
done
for v in '0' 'lots' '-1m'; do
    expect_rc 2 "--shm-size $v" nowhere build --shm-size "$v" "$T/ctx"
done
grep -q "unknown; one of core" <(nowhere build --ulimit nofiles=1 "$T/ctx" 2>&1) && ok \
    || bad "an unknown ulimit name lists the known ones"

# --- the services; the builder's own nofile hard limit is 4096 ---------------
"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
(ulimit -n 4096 && exec "$KILN_BUILDER_BIN" --run-memory 256M 2>"$T/builder.log") & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.1; done
kiln status --json > "$T/status.json" 2>/dev/null
if ! jq -e '.builder.checks[] | select(.name=="sandbox") | .ok' "$T/status.json" >/dev/null; then
    echo "sandbox unusable here: $(jq -r '.builder.checks[] | select(.name=="sandbox") | .detail' "$T/status.json")"
    exit 77
fi
busybox_rootfs "$T/busybox"
expect_rc 0 "import the base" kiln import --quiet "$T/busybox" bb:1

# --- --add-host ---------------------------------------------------------------
mkdir -p "$T/hosts"
printf 'FROM bb:1\nRUN grep host /etc/hosts && echo "lines=$(grep -c . /etc/hosts)"\n' \
    > "$T/hosts/Dockerfile"
expect_rc 0 "build with --add-host" kiln build --progress=plain --network none \
    --add-host myhost:10.1.2.3 '--add-host=v6host=[fd00:0::1]' "$T/hosts"
grep -qP '10\.1\.2\.3\tmyhost$' "$T/err" && ok || bad "myhost in /etc/hosts ($(grep -i host "$T/err"))"
grep -qP 'fd00::1\tv6host$' "$T/err" && ok || bad "v6host in /etc/hosts ($(grep -i host "$T/err"))"
grep -qP '\.0\.0\.1\tlocalhost$' "$T/err" && grep -q 'lines=5$' "$T/err" && ok \
    || bad "the usual entries are kept, two are added ($(grep -i -e host -e lines= "$T/err"))"
# Docker's rule: the hosts file is not part of the step's cache key.
expect_rc 0 "rebuild with another --add-host" kiln build --progress=json --network none \
    --add-host myhost:10.9.9.9 "$T/hosts"
[ "$(jq -s '[.[] | select(.step_done) | select(.step_done.cached == false)] | length' "$T/out")" = 0 ] \
    && ok || bad "--add-host changed the cache key"

# --- --ulimit -----------------------------------------------------------------
mkdir -p "$T/ulimit"
printf 'FROM bb:1\nRUN echo "n=$(ulimit -n) N=$(ulimit -Hn) u=$(ulimit -u) s=$(ulimit -s) c=$(ulimit -c)"\n' \
    > "$T/ulimit/Dockerfile"
expect_rc 0 "build with --ulimit" kiln build --progress=plain --no-cache --network none \
    --ulimit nofile=512:1024 --ulimit nproc=300 --ulimit stack=16777216 --ulimit core=-1 "$T/ulimit"
grep -q 'n=512 N=1024 u=300 s=16384 c=unlimited' "$T/err" && ok \
    || bad "ulimit inside RUN ($(grep 'n=' "$T/err"))"
expect_rc 0 "build without --ulimit" kiln build --progress=plain --no-cache --network none "$T/ulimit"
grep -q 'n=4096 N=4096' "$T/err" && ok || bad "RUN inherits the builder's limits ($(grep 'n=' "$T/err"))"
expect_rc 4 "a hard limit above the builder's" kiln build --progress=plain --no-cache \
    --ulimit nofile=1024:8192 "$T/ulimit"
grep -q "ulimit nofile: a hard limit of 8192 is above this builder's own of 4096" "$T/err" && ok \
    || bad "refusal of nofile=1024:8192 ($(cat "$T/err"))"
! grep -q 'n=' "$T/err" && ok || bad "the refused build ran its RUN"
expect_rc 4 "unlimited above the builder's" kiln build --no-cache --ulimit nofile=-1 "$T/ulimit"
grep -q "hard limit of unlimited is above" "$T/err" && ok || bad "refusal of nofile=-1 ($(cat "$T/err"))"

# --- --shm-size ---------------------------------------------------------------
mkdir -p "$T/shm"
printf 'FROM bb:1\nRUN grep " /dev/shm " /proc/mounts\n' > "$T/shm/Dockerfile"
expect_rc 0 "build with the default /dev/shm" kiln build --progress=plain --no-cache --network none "$T/shm"
grep -q ' /dev/shm tmpfs .*size=65536k' "$T/err" && ok || bad "default /dev/shm ($(grep shm "$T/err"))"
expect_rc 0 "build with --shm-size 128m" kiln build --progress=plain --no-cache --network none \
    --shm-size 128m "$T/shm"
grep -q ' /dev/shm tmpfs .*size=131072k' "$T/err" && ok || bad "--shm-size 128m ($(grep shm "$T/err"))"
expect_rc 4 "/dev/shm above the RUN memory" kiln build --no-cache --memory 64M --shm-size 128m "$T/shm"
grep -q "shm-size 128 MiB is above the RUN memory limit of 64 MiB" "$T/err" && ok \
    || bad "refusal of --shm-size above --memory ($(cat "$T/err"))"
expect_rc 4 "/dev/shm above the builder's RUN memory" kiln build --no-cache --shm-size 1g "$T/shm"
grep -q "above the RUN memory limit of 256 MiB" "$T/err" && ok || bad "refusal of --shm-size 1g ($(cat "$T/err"))"

# --- layer sizes, shown one way: "C compressed / U" -------------------------
mkdir -p "$T/sizes"
printf 'FROM bb:1\nRUN head -c 300000 /dev/urandom > /r && head -c 2000000 /dev/zero > /z\n' \
    > "$T/sizes/Dockerfile"
expect_rc 0 "build for layer sizes" kiln build --progress=plain --network none -t sizes:1 "$T/sizes"
# A step's layer is packed at commit: its DONE line cannot know the compressed size yet.
grep -qE 'DONE [0-9.]+s, layer \? compressed / 2\.[0-9] MB$' "$T/err" && ok \
    || bad "step DONE line ($(grep DONE "$T/err"))"
grep -qE 'built sha256:[0-9a-f]{64}: 2 layer\(s\) of [0-9.]+ [kM]B compressed / [0-9.]+ MB,' "$T/err" && ok \
    || bad "build summary ($(grep built "$T/err"))"
expect_rc 0 "rebuild with --progress=json" kiln build --progress=json --network none --no-cache \
    -t sizes:1 "$T/sizes"
jq -se '[.[] | select(.step_done) | .step_done | select(.size_uncompressed != null)
         | select((.size_uncompressed | tonumber) >= 2300000)] | length == 1' "$T/out" >/dev/null \
    && ok || bad "step_done carries size_uncompressed ($(jq -c 'select(.step_done)' "$T/out"))"
jq -se '[.[] | select(.completed) | .completed.build] | .[0]
        | (.size_compressed | tonumber) == (.size | tonumber)
          and (.size_uncompressed | tonumber) > (.size_compressed | tonumber)' "$T/out" >/dev/null \
    && ok || bad "completed build carries both sizes ($(jq -c 'select(.completed)' "$T/out"))"
expect_rc 0 "history" kiln history sizes:1
grep -E '^[0-9a-f]{12} .* [0-9.]+ [kM]B compressed / 2\.[0-9] MB +RUN ' "$T/out" >/dev/null && ok \
    || bad "history row of the RUN layer ($(cat "$T/out"))"
expect_rc 0 "history --json" kiln history --json sizes:1
# The uncompressed size is the layer's tar, as gunzip sees the stored blob.
L=$(jq -r '[.[] | select(.layer)][0].layer' "$T/out")
U=$(jq -r '[.[] | select(.layer)][0].size_uncompressed' "$T/out")
C=$(jq -r '[.[] | select(.layer)][0].size_compressed' "$T/out")
[ "$U" = "$(gzip -dc "$KILN_DATA/store/blobs/sha256/${L#sha256:}" | wc -c)" ] && ok \
    || bad "size_uncompressed $U is not the tar's size"
[ "$C" = "$(stat -c %s "$KILN_DATA/store/blobs/sha256/${L#sha256:}")" ] && ok \
    || bad "size_compressed $C is not the blob's size"
# Push: each layer blob and the summary give both sizes the same way.
if command -v docker-registry >/dev/null && command -v curl >/dev/null; then
    PORT=$(free_port)
    printf 'version: 0.1\nlog: { level: error }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: 127.0.0.1:%s }\n' \
        "$T/registry" "$PORT" > "$T/registry.yml"
    docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 & PIDS+=($!)
    for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
    expect_rc 0 "push" kiln push --tls-verify=false sizes:1 "127.0.0.1:$PORT/sizes:1"
    [ "$(grep -cE '^blob sha256:[0-9a-f]{12} done \([0-9.]+ [kM]?B compressed / [0-9.]+ [kM]?B\)$' "$T/err")" = 2 ] \
        && ok || bad "push: the layer blobs' lines ($(grep blob "$T/err"))"
    grep -qE '^pushed 127\.0\.0\.1:[0-9]+/sizes:1: 2 layer\(s\) of [0-9.]+ [kM]B compressed / [0-9.]+ MB, ' "$T/err" \
        && ok || bad "push summary ($(grep pushed "$T/err"))"
else
    echo "docker-registry or curl missing: push sizes not checked"
fi


# --- --ssh ----------------------------------------------------------------------
eval "$(ssh-agent -s -a "$T/agent.sock")" >/dev/null
ssh-keygen -q -t ed25519 -N '' -C kiln-test-key -f "$T/id" && ssh-add -q "$T/id" 2>/dev/null
ssh-add -l | grep -q kiln-test-key && ok || bad "the test agent holds the key"
mkdir -p "$T/ssh" "$T/busybox/bin"
cp "$KILN_PROBE_BIN" "$T/busybox/bin/kiln-probe"
expect_rc 0 "import the probe base" kiln import --quiet "$T/busybox" bbp:1
cat > "$T/ssh/Dockerfile" <<'EOF'
FROM bbp:1
RUN --mount=type=ssh echo "sock=$SSH_AUTH_SOCK" && kiln-probe ssh-agent list && kiln-probe ssh-agent sign && kiln-probe ssh-agent send 19
RUN --mount=type=ssh,id=work,target=/tmp/agent,required echo "work=$SSH_AUTH_SOCK" && kiln-probe ssh-agent list
EOF
expect_rc 0 "build with --ssh" kiln build --progress=plain --no-cache --network none \
    --ssh default --ssh "work=$T/agent.sock" "$T/ssh"
grep -q 'sock=/run/buildkit/ssh_agent.0$' "$T/err" && ok || bad "SSH_AUTH_SOCK of the default mount ($(grep sock= "$T/err"))"
# Three listings: each RUN's, and the one before the signature.
[ "$(grep -c 'reply=12 keys=1$' "$T/err")" = 3 ] && [ "$(grep -c 'key=kiln-test-key$' "$T/err")" = 3 ] && ok \
    || bad "the RUNs list the agent's key ($(grep -e reply= -e key= -e error= "$T/err"))"
grep -q 'sign=14$' "$T/err" && ok || bad "the agent signs for the RUN ($(grep -e sign= -e error= "$T/err"))"
grep -q 'reply=5$' "$T/err" && ok || bad "removing every key is refused ($(grep reply= "$T/err"))"
ssh-add -l 2>/dev/null | grep -q kiln-test-key && ok || bad "a RUN removed the agent's keys"
grep -q 'work=/tmp/agent$' "$T/err" && ok || bad "id= and target= ($(grep work= "$T/err"))"
# The agent's key never shows in the builder's log, events or layers.
K=$(sed -n 3p "$T/id")
! grep -rqF "$K" "$T"/*.log "$KILN_DATA/events" "$KILN_DATA/store/blobs" 2>/dev/null && ok \
    || bad "the private key shows outside the agent"
# Without --ssh: an optional mount is left out; a required one fails the
# build before anything runs.
printf 'FROM bbp:1\nRUN --mount=type=ssh kiln-probe exists /run/buildkit/ssh_agent.0 || echo "no-""agent"\n' \
    > "$T/ssh/Dockerfile.optional"
expect_rc 0 "optional ssh mount without --ssh" kiln build --progress=plain --no-cache --network none \
    -f "$T/ssh/Dockerfile.optional" "$T/ssh"
grep -q 'no-agent$' "$T/err" && ok || bad "optional ssh mount without --ssh ($(tail -3 "$T/err"))"
printf 'FROM bbp:1\nRUN echo "ran-""before"\nRUN --mount=type=ssh,required true\n' > "$T/ssh/Dockerfile.required"
expect_rc 4 "required ssh mount without --ssh" kiln build --progress=plain --no-cache --network none \
    -f "$T/ssh/Dockerfile.required" "$T/ssh"
grep -q "the build has no SSH agent 'default' (kiln build --ssh default" "$T/err" && ok \
    || bad "required ssh mount: message ($(tail -3 "$T/err"))"
! grep -q 'ran-before' "$T/err" && ok || bad "a RUN ran before the missing agent was noticed"
expect_rc 4 "required id the build lacks" kiln build --progress=plain --no-cache --network none \
    --ssh default "$T/ssh"
grep -q "no SSH agent 'work'" "$T/err" && ok || bad "missing id: message ($(tail -3 "$T/err"))"
# Bad values: exit 2 before anything is sent.
expect_rc 2 "--ssh with a missing socket" nowhere build --ssh "default=$T/none.sock" "$T/ctx"
expect_rc 2 "--ssh with a bad id" nowhere build --ssh "bad id=$T/agent.sock" "$T/ctx"
expect_rc 2 "--ssh default without an agent" env -u SSH_AUTH_SOCK "$KILN_CLI_BIN" build --ssh default "$T/ctx"
expect_rc 2 "--ssh twice" nowhere build --ssh default --ssh "default=$T/agent.sock" "$T/ctx"

finish
