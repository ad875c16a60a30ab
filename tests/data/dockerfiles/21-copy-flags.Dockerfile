FROM alpine AS src
RUN mkdir -p /data && echo hi > /data/file

FROM alpine
ARG OWNER=app
COPY --from=src --chown=${OWNER}:staff --chmod=0640 /data/file /srv/
COPY --link --exclude=*.md --exclude=docs/ . /app/
COPY --parents ./cmd/*/main.go /src/
COPY ["with space.txt", "/dst/with space.txt"]
COPY *.conf /etc/app/
COPY --from=nginx:1.25 /etc/nginx/nginx.conf /etc/nginx/
COPY --from=0 /data /data0
