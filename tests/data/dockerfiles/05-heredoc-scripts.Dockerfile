# syntax=docker/dockerfile:1.4
FROM alpine:3.19
RUN <<EOF
set -e
apk add --no-cache curl jq
adduser -D app
EOF
RUN <<EOF
#!/usr/bin/env sh
echo "running as a file"
EOF
RUN <<-EOT sh -x
	echo indented
	echo lines
	EOT
COPY <<EOF /etc/motd
Welcome to $HOSTNAME
EOF
