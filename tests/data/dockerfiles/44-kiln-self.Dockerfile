# Builds Kiln's services.
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libprotobuf-c-dev protobuf-c-compiler libnng-dev \
      libcurl4-openssl-dev libssl-dev libcjson-dev libarchive-dev libdeflate-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF \
 && cmake --build build -j"$(nproc)" \
 && cmake --install build --prefix /out

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libprotobuf-c1 libnng1 libcurl4 libcjson1 libarchive13 libdeflate0 libzstd1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/ /usr/local/bin/
VOLUME /var/lib/kiln
EXPOSE 9100 9101
USER 0
ENTRYPOINT ["kiln-builder"]
CMD ["--data", "/var/lib/kiln"]
