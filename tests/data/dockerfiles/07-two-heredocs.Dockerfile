FROM alpine
COPY <<config.ini <<run.sh /app/
[main]
debug=false
config.ini
#!/bin/sh
echo run
run.sh
RUN cat <<A > /a && cat <<B > /b
first
A
second
B
