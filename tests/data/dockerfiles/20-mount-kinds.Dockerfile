FROM golang:1.22 AS tools
RUN go install example.com/tool@latest

FROM debian:bookworm
RUN --mount=type=bind,from=tools,source=/go/bin,target=/tools \
    --mount=type=tmpfs,target=/tmp,size=128m \
    --mount=type=secret,id=npmrc,target=/root/.npmrc,required=true \
    --mount=type=ssh \
    --mount=type=cache,id=apt,target=/var/cache/apt,sharing=locked \
    /tools/tool run
RUN --mount=type=secret,id=token,env=API_TOKEN --network=none ./check
RUN --security=insecure --network=host make test
