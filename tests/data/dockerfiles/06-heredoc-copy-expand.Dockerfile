FROM busybox:1.36
ARG VERSION=1.2.3
ENV APP_HOME=/opt/app
COPY <<EOF ${APP_HOME}/version.txt
version=${VERSION}
home=$APP_HOME
quoted="yes"
EOF
COPY <<'EOF' /opt/app/raw.txt
version=${VERSION}
EOF
COPY --chmod=0755 <<EOF /usr/local/bin/start
#!/bin/sh
exec "\$@"
EOF
