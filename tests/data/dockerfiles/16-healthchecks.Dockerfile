FROM redis:7 AS with
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --start-interval=1s --retries=5 \
  CMD ["redis-cli", "ping"]
FROM redis:7 AS shell
HEALTHCHECK CMD redis-cli ping || exit 1
FROM redis:7
HEALTHCHECK NONE
