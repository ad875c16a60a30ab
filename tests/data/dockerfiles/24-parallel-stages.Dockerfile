FROM alpine AS fetch-a
RUN wget -O /a https://example.com/a

FROM alpine AS fetch-b
RUN wget -O /b https://example.com/b

FROM alpine AS fetch-c
RUN wget -O /c https://example.com/c

FROM alpine
COPY --from=fetch-a /a /a
COPY --from=fetch-b /b /b
COPY --from=fetch-c /c /c
