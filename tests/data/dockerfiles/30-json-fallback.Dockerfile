FROM alpine
RUN [ -f /etc/os-release ] && cat /etc/os-release
CMD ['single', 'quotes']
ENTRYPOINT ["unterminated"
RUN ["echo", "exec form"]
CMD ["a"] trailing text makes this shell form
