#!/bin/sh
# Builds ./hello: the Rust crate in handlers/ as a staticlib, linked into one static Go
# binary. ./build.sh -purego: the crate as a cdylib beside a Go binary built without cgo.
set -e
cd "$(dirname "$0")"
CGO_ENABLED=0 exec go tool tandem build "$@"
