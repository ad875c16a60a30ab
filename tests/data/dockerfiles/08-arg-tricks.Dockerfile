ARG REGISTRY=docker.io
ARG IMAGE=library/alpine
ARG TAG
FROM ${REGISTRY}/${IMAGE}:${TAG:-3.19} AS base
ARG TAG
ARG EXTRA=${TAG:+tag-was-set}
LABEL tag="${TAG}" extra="$EXTRA" unset="${NOPE-default}" empty="${TAG:-empty}"
RUN echo "$TAG"
