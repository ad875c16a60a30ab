FROM ubuntu:22.04
ENV DEBIAN_FRONTEND noninteractive
ENV A=1 B="two words" C=three\ words
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
ENV PATH=/opt/bin:$PATH
RUN env
