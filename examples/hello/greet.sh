#!/bin/sh
# Prints a greeting with the example's version.
echo "$1 (version $(cat "$(dirname "$0")/VERSION" 2>/dev/null || echo unknown))"
