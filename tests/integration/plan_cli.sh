#!/usr/bin/env bash
# kiln build --plan through kiln-builder's Plan RPC: a multi-stage Dockerfile,
# --build-arg and --target, syntax errors with line and column, bad input.
set -u
. "$(dirname "$0")/lib.sh"
: "${KILN_CLI_BIN:?}" "${KILN_PUSHER_BIN:?}" "${KILN_BUILDER_BIN:?}"
command -v jq >/dev/null || { echo "jq missing"; exit 77; }
T=$(mktemp -d /tmp/kiln-plan-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
export KILN_DATA=$T/data
kiln() { "$KILN_CLI_BIN" "$@"; }

mkdir -p "$T/ctx"
cat > "$T/ctx/Dockerfile" <<'DF'
# syntax=docker/dockerfile:1
ARG GO=1.22
FROM golang:${GO} AS build
ARG VERSION=dev
ENV CGO_ENABLED=0 OUT=/out/app-$VERSION
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache go build -o $OUT ./...

FROM build AS test
RUN go test ./...

FROM scratch AS final
COPY --from=build /out/ /bin/
EXPOSE 8080/tcp 9000-9002/udp
USER 65532:65532
ENTRYPOINT ["/bin/app"]
DF

"$KILN_PUSHER_BIN" 2>"$T/pusher.log" & PIDS+=($!)
"$KILN_BUILDER_BIN" 2>"$T/builder.log" & PIDS+=($!)
for _ in $(seq 100); do kiln status >/dev/null 2>&1 && break; sleep 0.05; done

expect_rc 0 "plan" kiln build --plan --build-arg VERSION=1.2 --build-arg NOPE=1 "$T/ctx"
P=$T/out
[ "$(jq '.stages | length' "$P")" = 3 ] && ok || bad "three stages"
[ "$(jq -r '.stages[0].base.ref' "$P")" = "golang:1.22" ] && ok || bad "global ARG expanded in FROM"
jq -e '.stages[0].instructions[] | select(.kind=="ENV") | .original | test("OUT=/out/app-\\$VERSION")' "$P" >/dev/null && ok || bad "ENV original text kept"
jq -e '[.stages[] | select(.name=="test") | .runs][0] == false' "$P" >/dev/null && ok || bad "unneeded stage does not run"
jq -e '[.stages[] | select(.name=="final") | .runs][0] == true' "$P" >/dev/null && ok || bad "target stage runs"
grep -q 'NOPE' "$T/err" && ok || bad "unused build arg warned"

expect_rc 0 "plan --target test" kiln build --plan --target test "$T/ctx"
jq -e '[.stages[] | select(.name=="test") | .runs][0] == true' "$T/out" >/dev/null && ok || bad "--target test runs test"
jq -e '[.stages[] | select(.name=="final") | .runs][0] == false' "$T/out" >/dev/null && ok || bad "--target test skips final"

printf 'FROM busybox\nRUN true\nFORM x\n' > "$T/bad.Dockerfile"
expect_rc 4 "syntax error" kiln build --plan -f "$T/bad.Dockerfile" "$T/ctx"
grep -q ':3:1: unknown instruction' "$T/err" && ok || bad "error names line 3 column 1"
expect_rc 4 "unknown target" kiln build --plan --target nosuch "$T/ctx"
expect_rc 1 "missing Dockerfile" kiln build --plan "$T/nowhere"
head -c 4096 /dev/urandom | tr -d '\0' > "$T/garbage"
expect_rc 4 "binary garbage" kiln build --plan -f "$T/garbage" "$T/ctx"
expect_rc 2 "no context" kiln build --plan
expect_rc 2 "bad --network" kiln build --plan --network bridge "$T/ctx"
expect_rc 0 "plan from stdin" kiln build --plan -f - "$T/ctx" < "$T/ctx/Dockerfile"
kiln status >/dev/null && ok || bad "builder still healthy"

finish
