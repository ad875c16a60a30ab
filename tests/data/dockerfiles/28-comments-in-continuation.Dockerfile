FROM debian:bookworm
RUN apt-get update && apt-get install -y \
    # compilers
    gcc \
    make \
    # debugging
    gdb \

    strace \
 && rm -rf /var/lib/apt/lists/*
