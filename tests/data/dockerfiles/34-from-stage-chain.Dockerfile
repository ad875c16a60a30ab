FROM ubuntu:22.04 AS os
ENV LANG=C.UTF-8
USER root
WORKDIR /opt
SHELL ["/bin/bash", "-c"]

FROM os AS runtime
RUN apt-get update
USER 1000

FROM runtime AS app
WORKDIR app
RUN echo $LANG
