FROM --platform=linux/arm64 alpine AS arm
RUN uname -m
FROM --platform=linux/x86_64 alpine AS amd
FROM arm
RUN echo child keeps parent platform
