#!/usr/bin/env bash
# Fuzz the board-side protocol code (tinydyn/firmware/protocol.c + td_server.c) under ASan+UBSan.
#   tests/fuzz/run_fuzz.sh [N] [ENGINE]
# N inputs (default 1000000). ENGINE: standalone (gcc or clang, seeded generator of mutated
# frames; needs nothing else), libfuzzer (clang -fsanitize=fuzzer, coverage-guided, seeded with
# the vector board cases), or all (default: both when clang has libFuzzer, else standalone).
set -euo pipefail
N=${1:-1000000}
ENGINE=${2:-all}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${FUZZ_OUT:-$(mktemp -d /tmp/tinydyn-fuzz.XXXXXX)}
mkdir -p "$OUT"
FW=$ROOT/tinydyn/firmware
SRCS=("$FW/protocol.c" "$FW/td_server.c" "$FW/boards/host/board.c" "$ROOT/tests/host_board/stub_model.c"
      "$HERE/fuzz_protocol.c")
FLAGS=(-std=c99 -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all -Wall -Wextra -Werror -I"$FW")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

have_libfuzzer() {
    command -v clang >/dev/null && echo 'int LLVMFuzzerTestOneInput(const char*d,unsigned long n){(void)d;(void)n;return 0;}' \
        | clang -x c -fsanitize=fuzzer - -o "$OUT/probe" 2>/dev/null
}

if [[ $ENGINE == all ]]; then
    if have_libfuzzer; then ENGINE="standalone libfuzzer"; else ENGINE=standalone; fi
fi

for engine in $ENGINE; do
    case $engine in
    standalone)
        CC=${CC:-gcc}
        "$CC" "${FLAGS[@]}" -fsanitize=address,undefined "${SRCS[@]}" "$HERE/fuzz_main.c" -o "$OUT/fuzz_standalone"
        "$OUT/fuzz_standalone" "$N" "${FUZZ_SEED:-1}"
        ;;
    libfuzzer)
        clang "${FLAGS[@]}" -fsanitize=fuzzer,address,undefined "${SRCS[@]}" -o "$OUT/fuzz_libfuzzer"
        mkdir -p "$OUT/corpus"
        python3 - "$ROOT/tests/vectors/protocol_vectors.json" "$OUT/corpus" <<'PY'
import json, sys, pathlib
v = json.load(open(sys.argv[1]))
for c in v["board_cases"]:
    pathlib.Path(sys.argv[2], c["name"]).write_bytes(bytes.fromhex(c["send"]))
PY
        if ! "$OUT/fuzz_libfuzzer" -runs="$N" -seed="${FUZZ_SEED:-1}" -max_len=8192 -timeout=10 \
            -print_final_stats=1 "$OUT/corpus" >"$OUT/libfuzzer.log" 2>&1; then
            tail -n 40 "$OUT/libfuzzer.log"
            echo "fuzz: libFuzzer FAILED (log and crash input in $OUT)" >&2
            exit 1
        fi
        grep -E "^(Done|stat::number_of_executed_units|#[0-9]+ +DONE)" "$OUT/libfuzzer.log" || true
        echo "fuzz: libFuzzer $N runs, no crash"
        ;;
    *) echo "unknown engine $engine: use standalone, libfuzzer or all" >&2; exit 2 ;;
    esac
done
