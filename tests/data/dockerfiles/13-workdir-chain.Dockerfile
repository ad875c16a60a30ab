FROM scratch AS s
WORKDIR /usr
WORKDIR local
WORKDIR ../share/./doc
ENV SUB=pkg
WORKDIR $SUB
COPY a .
FROM alpine
WORKDIR relative/dir
RUN pwd
