FROM centos:7
MAINTAINER "Old Style" <old@example.com>
LABEL vendor=ACME\ Incorporated \
      com.example.is-beta= \
      com.example.version="0.0.1-beta"
