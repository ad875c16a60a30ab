FROM alpine
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/releases/app-1.0.tar.gz /tmp/app.tar.gz
ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.12.0 /src/buildkit
ADD git@github.com:example/private.git /src/private
ADD rootfs.tar.xz /
ADD --chown=1:1 --link config/ /etc/config/
