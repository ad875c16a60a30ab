FROM --platform=$BUILDPLATFORM tonistiigi/xx AS xx
FROM --platform=$BUILDPLATFORM golang:1.22-alpine AS build
COPY --from=xx / /
ARG TARGETPLATFORM
ARG BUILDPLATFORM
RUN echo "building on $BUILDPLATFORM for $TARGETPLATFORM"
RUN xx-go build -o /out/app .
FROM alpine
ARG TARGETARCH
ARG TARGETVARIANT
LABEL arch=$TARGETARCH variant=$TARGETVARIANT
COPY --from=build /out/app /usr/bin/app
