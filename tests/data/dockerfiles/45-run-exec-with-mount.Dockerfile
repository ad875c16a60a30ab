FROM python:3.12
RUN --mount=type=cache,target=/root/.cache ["pip", "install", "poetry"]
RUN --mount=type=bind,target=/ctx,rw ["sh", "-c", "ls /ctx"]
