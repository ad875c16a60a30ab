FROM alpine
RUN <<EOF
echo never ends
EOF_NOT
