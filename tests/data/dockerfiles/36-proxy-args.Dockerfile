FROM alpine
ARG VERSION=1
RUN apk add --no-cache curl
