FROM alpine AS base
RUN apk add --no-cache make

FROM base AS test
COPY . /src
RUN make -C /src test

FROM base AS build
COPY . /src
RUN make -C /src

FROM scratch AS release
COPY --from=build /src/out /

FROM build AS debug
RUN apk add gdb
