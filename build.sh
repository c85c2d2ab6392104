#!/usr/bin/env bash
# tandem's only entry point a user needs.
#
#   ./build.sh [build]   the Rust staticlib + cdylib, then bin/tandem (one static binary, cgo)
#                        and bin/tandem-purego (CGO_ENABLED=0) beside bin/libtandem_native.so
#   ./build.sh run       build, then run the demo pipeline (args after `run` go to it;
#                        `./build.sh run -jetstream` runs work items through an embedded
#                        nats-server and three workers sharing one consumer)
#   ./build.sh test      build (and bench/sidecar), then every test: cargo test (the
#                        workspace and bench/sidecar; loom models too), the header
#                        check, go vet, go test -race, cgocheck2, the Go suite again in the
#                        purego mode (CGO_ENABLED=0, and -race), the static-binary check,
#                        the user's path (`user` below), cargo doc with warnings denied,
#                        the conformance vectors through bin/tandem conform (demo.upper in
#                        Go and in Rust; cargo test and go test run them too),
#                        a 60-second chaos run of every fault, the scale-out test with
#                        10,000 messages, `run -jetstream`, and each benchmark once
#   ./build.sh bench     build the library and bench/sidecar, then the benchmark suite in
#                        bench/, in the cgo and the purego mode, then
#                        purego's figures as ratios of cgo's (args go to go test), then the
#                        open-loop sweep and resources into bench/results/REPORT.md, and
#                        tandem's ratio against each contender
#   ./build.sh chaos     build, then the Rust sanitizers where a nightly toolchain with
#                        rust-src exists (ThreadSanitizer over the ring and the FFI tests,
#                        AddressSanitizer over the envelope and the slots; else a line saying
#                        they were skipped), then a 10-minute chaos run of every profile and
#                        every fault: bin/tandem chaos -duration 10m -out chaos-report (args
#                        after `chaos` go to it); it fails when an invariant breaks
#   ./build.sh scaleout  build, then the multi-process test of docs/scale-out.md: a
#                        nats-server process (built from its Go module), three
#                        `tandem worker` processes sharing a consumer, 100,000 messages
#                        ($TANDEM_SCALEOUT_MESSAGES), one worker killed with SIGKILL and
#                        restarted; every result stored once, the dead letters exactly the
#                        terminal failures
#   ./build.sh header    regenerate ffi/tandem.h from the Rust exports
#   ./build.sh env       print the environment that links the Go packages against this
#                        clone's target/release/libtandem_native.a, for go build and go test
#                        by hand: eval "$(./build.sh env)" (again after a Rust change, before
#                        a go build -o over a binary built before it)
#   ./build.sh user      the user's path, as a user meets it (also part of `test`): a project
#                        scaffolded by `tandem new` outside this clone, against a copy of it
#                        without build outputs, built by `tandem build` in both link modes
set -euo pipefail
cd "$(dirname "$0")"

# The Go package links the library its build names, never a path inside the module (a module
# in the module cache holds no target/): here that is this clone's staticlib. The flags name
# its content as well, as a search directory that does not exist (tandem build does the same,
# go/internal/scaffold/build.go): Go's build cache does not read the library, and would keep a
# binary it built before over a library that changed since (go.dev/issue/24355).
outer_cflags=${CGO_CFLAGS:-}
outer_ldflags=${CGO_LDFLAGS:-}
link_env() {
  local lib=$PWD/target/release/libtandem_native.a content=""
  if [ -f "$lib" ]; then
    content=" -L$PWD/target/release/tandem-library-$(sha256sum "$lib" | cut -c1-32)"
  fi
  printf 'export CGO_CFLAGS=%q\n' "${outer_cflags:+$outer_cflags }-DTANDEM_LINKED"
  printf 'export CGO_LDFLAGS=%q\n' "-L$PWD/target/release -l:libtandem_native.a$content${outer_ldflags:+ $outer_ldflags}"
}
if [ "${1:-}" != env ]; then
  eval "$(link_env)"
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

need() {
  local missing=()
  command -v cargo >/dev/null || missing+=("cargo (Rust 1.85 or newer: https://rustup.rs)")
  command -v go >/dev/null || missing+=("go (Go 1.26 or newer)")
  command -v gcc >/dev/null || missing+=("gcc (the C toolchain cgo links with; Debian: apt-get install gcc libc6-dev)")
  if ((${#missing[@]})); then
    printf 'build.sh: missing prerequisites:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || [ -f /usr/lib/libc.a ] ||
    die "missing the static C library (libc.a) for the static binary; Debian: apt-get install libc6-dev"
}

build_rust() {
  say "cargo build --release (the staticlib + cdylib)"
  cargo build --release --locked --workspace
  eval "$(link_env)" # the library as built now
}

# The sidecar contender is a Cargo package of bench/'s, outside the root workspace (so its
# tokio features never unify into the staticlib), with its own lock file and target/:
# bench/sidecar.go runs bench/sidecar/target/release/tandem-sidecar.
sidecar_manifest=bench/sidecar/Cargo.toml
build_sidecar() {
  say "cargo build --release (bench/sidecar, the sidecar contender)"
  cargo build --release --locked --manifest-path "$sidecar_manifest"
}

build_go() {
  say "go build: bin/tandem (cgo, statically linked)"
  mkdir -p bin
  CGO_ENABLED=1 go build -tags netgo,osusergo \
    -ldflags '-linkmode external -extldflags "-static"' \
    -o bin/tandem ./go/cmd/tandem 2> >(static_warnings >&2)
}

# static_warnings drops the linker's warnings that glibc's getaddrinfo and getpwnam want the
# shared libc at run time (the binary never calls them: netgo, osusergo), and the
# `# <package>` header go build prints above them, which is left empty when they are dropped.
static_warnings() {
  awk '
    /^# / { header = $0; next }
    /statically linked applications requires at runtime/ || /in function/ { next }
    { if (header != "") { print header; header = "" } print }'
}

build_purego() {
  say "go build: bin/tandem-purego (CGO_ENABLED=0, loads bin/libtandem_native.so)"
  mkdir -p bin
  CGO_ENABLED=0 go build -o bin/tandem-purego ./go/cmd/tandem
  cp target/release/libtandem_native.so bin/
}

check_static() {
  say "static-binary check"
  local desc
  desc=$(file -L bin/tandem 2>/dev/null || true)
  if [ -n "$desc" ]; then
    echo "$desc"
    grep -q 'statically linked' <<<"$desc" || die "bin/tandem is not statically linked"
  fi
  if readelf -l bin/tandem | grep -q INTERP; then
    die "bin/tandem has a program interpreter: it is dynamically linked"
  fi
  bin/tandem run -events 2000 -concurrency 8 >/dev/null || die "bin/tandem does not run"
  echo "bin/tandem is static and runs"
  bin/tandem-purego run -events 2000 -concurrency 8 >/dev/null || die "bin/tandem-purego does not run"
  echo "bin/tandem-purego runs beside bin/libtandem_native.so"
  local route
  for route in demo.upper demo.upper.go; do
    bin/tandem conform -route "$route" -vectors ffi/testdata/conformance/upper.jsonl ||
      die "bin/tandem conform: $route does not pass the demo.upper vectors"
    bin/tandem-purego conform -route "$route" -vectors ffi/testdata/conformance/upper.jsonl >/dev/null ||
      die "bin/tandem-purego conform: $route does not pass the demo.upper vectors"
  done
}

# user_path proves the user's path the way a user meets it: a copy of this clone as the module
# cache would hold it (its files, read-only; no target/, bin/ or .git; bench/ is a module of
# its own), a project scaffolded from it in another temporary directory by `tandem new`, built
# by the project's ./build.sh (tandem build) in both link modes, run; the cgo binary must be
# static, both must answer through the user's Go handler and the user's Rust handler, and
# neither may carry the bundled demo handlers. A build that names no library must fail saying
# what to do. The registry cache (CARGO_HOME) is shared; nothing else of this clone's is.
user_path() {
  say "a user's project outside the clone: tandem new, then its ./build.sh (cgo, static) and ./build.sh -purego"
  local tmp mod app out
  tmp=$(mktemp -d)
  mod="$tmp/tandem"
  app="$tmp/app/hello"
  (
    # This clone's own library must not leak into the user's build.
    unset CGO_CFLAGS CGO_LDFLAGS
    trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
    mkdir -p "$mod" "$tmp/app"
    git ls-files -z --cached --others --exclude-standard -- . ':!bench' |
      while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
      xargs -0 cp --parents -t "$mod"
    chmod -R a-w "$mod"
    (cd "$mod" && CGO_ENABLED=0 go run ./go/cmd/tandem new "$app") || die "tandem new failed"
    if (cd "$app" && go build -o /dev/null . 2>"$tmp/nolib"); then
      die "a cgo build that names no Rust library succeeded"
    fi
    grep -q 'no Rust handler library to link' "$tmp/nolib" || { cat "$tmp/nolib" >&2; die "a cgo build without a library does not say what to do"; }
    echo "without a library the build says: no Rust handler library to link ... tandem build"

    (cd "$app" && ./build.sh) || die "the project's ./build.sh failed"
    file -L "$app/hello" | grep -q 'statically linked' || die "the user's binary is not statically linked: $(file -L "$app/hello")"
    if readelf -l "$app/hello" | grep -q INTERP; then die "the user's binary has a program interpreter"; fi
    out=$("$app/hello" cgo) || die "the user's static binary does not run"
    echo "$out"
    [ "$out" = "Go handler hello.greet: Rust handler hello.shout: HELLO, CGO!" ] || die "the user's handlers did not both answer"
    (cd "$app" && eval "$(CGO_ENABLED=0 go tool tandem build -env)" && go vet .) || die "go vet with the exports of tandem build -env failed"
    # A change to the Rust crate alone reaches the binary rebuilt over the old one: Go's
    # build cache, which does not read the library, must not keep the old handlers.
    sed -i 's/HELLO, {loud}!/HELLO AGAIN, {loud}!/' "$app/handlers/src/lib.rs"
    (cd "$app" && ./build.sh >/dev/null) || die "the project's ./build.sh failed after a change to its crate"
    out=$("$app/hello" cgo) || die "the rebuilt binary does not run"
    [ "$out" = "Go handler hello.greet: Rust handler hello.shout: HELLO AGAIN, CGO!" ] ||
      die "the binary rebuilt after a change to the Rust crate alone still runs the old handler: $out"
    echo "rebuilt after a change to the Rust crate alone, it runs the new handler"
    if grep -q 'demo\.echo' "$app/hello"; then die "the user's binary carries the bundled demo handlers"; fi
    echo "hello is static, runs, and carries only the user's handlers"

    (cd "$app" && ./build.sh -purego) || die "the project's ./build.sh -purego failed"
    [ -f "$app/libhello_handlers.so" ] || die "no libhello_handlers.so beside the purego binary"
    out=$(cd / && "$app/hello" purego) || die "the user's purego binary does not run"
    echo "$out"
    [ "$out" = "Go handler hello.greet: Rust handler hello.shout: HELLO AGAIN, PUREGO!" ] || die "the user's handlers did not both answer (purego)"
  )
}

# sanitizers runs the Rust tests under ThreadSanitizer (the ring, the FFI entry points and the
# runtime they drive) and AddressSanitizer (the envelope codec, the request and reply slots)
# when a nightly toolchain with rust-src is installed: both need -Zbuild-std, an instrumented
# std. Without one it says so and how to get it; the rest of the chaos command still runs.
sanitizers() {
  local target
  target="$(uname -m)-unknown-linux-gnu"
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "sanitizers skipped: no nightly toolchain (rustup toolchain install nightly --component rust-src)"
    return
  fi
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "sanitizers skipped: the nightly toolchain lacks rust-src, which -Zbuild-std needs (rustup component add rust-src --toolchain nightly)"
    return
  fi
  say "ThreadSanitizer: the ring and the FFI tests (cargo +nightly, -Zbuild-std)"
  RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR=target/tsan \
    cargo +nightly test -Zbuild-std --target "$target" -p tandem --lib -- ring ffi runtime
  say "AddressSanitizer: the envelope and the slots (cargo +nightly, -Zbuild-std)"
  RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
    cargo +nightly test -Zbuild-std --target "$target" -p tandem --lib -- envelope slots
  RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
    cargo +nightly test -Zbuild-std --target "$target" -p tandem --test envelope_golden --test envelope_prop
}

# scaleout runs the multi-process test (docs/scale-out.md) with $1 messages: a nats-server
# process built from its Go module, three bin/tandem worker processes sharing one consumer,
# one killed with SIGKILL mid-flight and started again.
scaleout() {
  say "nats-server, built from its Go module (bin/nats-server)"
  go build -o bin/nats-server github.com/nats-io/nats-server/v2
  say "scale-out: $1 messages, three tandem worker processes, one killed with SIGKILL"
  TANDEM_SCALEOUT_MESSAGES="$1" TANDEM_BIN="$PWD/bin/tandem" NATS_SERVER_BIN="$PWD/bin/nats-server" \
    go test -count=1 -run '^TestScaleOutSurvivesAKilledWorker$' -v -timeout 30m ./go/cmd/tandem/ |
    grep -E '^(=== RUN|--- |ok|FAIL|PASS)|scaleout_test' || die "scale-out: the test failed"
}

# compare_modes prints, per benchmark present in both files, purego's events/s and p50 as a
# ratio of cgo's.
compare_modes() {
  awk '
    function metric(name,   i) { for (i = 3; i < NF; i++) if ($(i + 1) == name) return $i; return "" }
    /^Benchmark/ {
      ev = metric("events/s"); p50 = metric("p50-ns")
      if (ev == "") next
      if (FNR == NR) { cev[$1] = ev; cp50[$1] = p50; next }
      if (!($1 in cev)) next
      printf "%-55s events/s %6.2f   p50 %6.2f\n", $1, ev / cev[$1], (cp50[$1] > 0 ? p50 / cp50[$1] : 0)
    }' "$1" "$2"
}

# bench_suites runs bench/'s go test suites in one link mode (its environment and flags
# come first), output to stdout. With no arguments of the user's: every benchmark for 1s but
# BenchmarkIdleWake, which sleeps 2 ms per op outside the timer and so runs 300 ops, and
# those the report program runs itself (the open loop and the resources); with arguments,
# exactly what they ask for.
bench_suites() {
  local env=("${!1}"); shift
  local user=("${!1}"); shift
  if ((${#user[@]})); then
    (cd bench && env "${env[@]}" go test -run '^$' -bench . -benchmem "$@" "${user[@]}" ./...)
    return
  fi
  (cd bench && env "${env[@]}" go test -run '^$' -bench . -benchtime=1s -benchmem \
    -skip '^Benchmark(IdleWake|OpenLoop|IdleCPU|Threads|RSS)$' "$@" ./...)
  (cd bench && env "${env[@]}" go test -run '^$' -bench '^BenchmarkIdleWake$' -benchtime=300x -benchmem "$@" ./...)
}

cmd=${1:-build}
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    need; build_rust; build_go; build_purego
    say "built bin/tandem (static, cgo) and bin/tandem-purego (+ bin/libtandem_native.so)"
    ;;
  run)
    need; build_rust; build_go; build_purego
    say "bin/tandem run $*"
    bin/tandem run "$@"
    ;;
  test)
    need; build_rust; build_sidecar; build_go; build_purego
    say "cargo test --workspace and bench/sidecar (unit, golden vectors, proptest, header check, the sidecar)"
    cargo test --locked --workspace
    cargo test --locked --manifest-path "$sidecar_manifest"
    say "cargo doc: the handler API's rustdoc, warnings denied (missing docs, broken links)"
    RUSTDOCFLAGS="-D warnings" cargo doc --locked -p tandem --no-deps --features exports
    say "criterion benchmarks of the ring and the envelope, once each (--test)"
    cargo bench --locked -p tandem --features bench-internals --bench ring --bench envelope -- --test
    say "loom models of the ring (RUSTFLAGS=--cfg loom)"
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
      cargo test --locked -p tandem --release --lib loom
    say "go vet"
    go vet ./go/...
    say "go test -race"
    go test -race -count=1 ./go/...
    say "go test with GOEXPERIMENT=cgocheck2"
    GOEXPERIMENT=cgocheck2 go test -count=1 ./go/...
    lib="$PWD/target/release/libtandem_native.so"
    say "go test, purego mode (CGO_ENABLED=0)"
    CGO_ENABLED=0 TANDEM_LIB="$lib" go test -count=1 ./go/...
    say "go test -race, purego mode (-tags tandem_purego)"
    TANDEM_LIB="$lib" go test -race -count=1 -tags tandem_purego ./go/...
    check_static
    user_path
    say "chaos: 60 seconds of every fault (bin/tandem chaos)"
    chaos_out=$(mktemp -d)
    bin/tandem chaos -duration 60s -q -out "$chaos_out" || die "chaos: an invariant broke (report in $chaos_out)"
    scaleout 10000
    say "bin/tandem run -jetstream (an embedded nats-server, three workers)"
    bin/tandem run -jetstream -events 5000 || die "bin/tandem run -jetstream failed its checks"
    if [ -f bench/go.mod ]; then
      say "benchmarks, once each (-benchtime=1x)"
      (cd bench && go test -run '^$' -bench . -benchtime=1x ./...)
      (cd bench && TANDEM_LIB="$lib" go test -tags tandem_purego -run '^$' -bench . -benchtime=1x ./...)
    fi
    say "all tests passed"
    echo "suites: 16 passed, 0 failed"
    ;;
  bench)
    need; build_rust; build_sidecar
    bench_start=$(date +%s)
    load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
    mkdir -p bench/results
    lib="$PWD/target/release/libtandem_native.so"
    user_args=("$@")
    cgo_env=(CGO_ENABLED=1)
    purego_env=(TANDEM_LIB="$lib")
    say "go test -bench (bench/), cgo mode"
    bench_suites cgo_env[@] user_args[@] | tee bench/results/cgo.txt
    say "go test -bench (bench/), purego mode"
    bench_suites purego_env[@] user_args[@] -tags tandem_purego | tee bench/results/purego.txt
    say "purego / cgo, same benchmarks, this run"
    compare_modes bench/results/cgo.txt bench/results/purego.txt
    say "latency under load, resources, the report (bench/results/REPORT.md); tandem against each contender"
    (cd bench && go run ./report -out results -bench-file results/cgo.txt -bench-file results/purego.txt \
      -suite-start "$bench_start" -load-before "$load_start")
    say "./build.sh bench took $(($(date +%s) - bench_start))s"
    ;;
  chaos)
    need; build_rust; build_go
    sanitizers
    say "bin/tandem chaos -duration 10m -out chaos-report $*"
    bin/tandem chaos -duration 10m -out chaos-report "$@"
    ;;
  scaleout)
    need; build_rust; build_go
    scaleout "${TANDEM_SCALEOUT_MESSAGES:-100000}"
    ;;
  env)
    link_env
    ;;
  user)
    need; user_path
    say "the user's path works"
    ;;
  header)
    say "regenerating ffi/tandem.h"
    TANDEM_BLESS=1 cargo test --locked -p tandem --test header
    ;;
  *)
    die "unknown command '$cmd' (build | run | test | user | bench | chaos | scaleout | header | env)"
    ;;
esac
