FROM alpine
RUN echo ok
COPPY . /app
