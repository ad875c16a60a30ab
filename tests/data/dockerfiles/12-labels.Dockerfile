FROM scratch
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Kiln sample" \
      org.opencontainers.image.revision=$REVISION \
      "com.example.multi word"=yes
LABEL single value here
MAINTAINER Kiln Maintainers <maintainers@example.com>
