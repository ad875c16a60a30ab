FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential autoconf automake libtool pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN ./autogen.sh && ./configure --prefix=/usr/local && make -j"$(nproc)" && make install DESTDIR=/out

FROM debian:bookworm-slim
COPY --from=build /out/usr/local /usr/local
RUN ldconfig
CMD ["hello"]
