# Helpers shared by bench/run and bench/traffic: logging, the processes a run started
# (stopped by pid on any exit), free ports, pinned starts, CPU ticks and wrk figures.
# Sourced after PRIO, TMP (may be empty until created) and BENCH_DIR are set.
# shellcheck shell=bash

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] FAILED: %s\n' "$*" >&2
    exit 1
}

# --- processes we started, stopped by pid on any exit -------------------------------------
STARTED=()
TMP=""
stop_pid() {
    local pid=$1 kept=() p
    # Forget it first, so a later clean-up never signals a pid the system gave to another.
    for p in "${STARTED[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    STARTED=("${kept[@]}")
    # Only while it is still our child: never a pid that was reused.
    [[ $(sed 's/^.*) //' /proc/"$pid"/stat 2>/dev/null | cut -d' ' -f2) == "$$" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$? pid
    trap - ERR
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $status -ne 0 ]]; then
            log "configurations and logs of the failed run kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'log "FAILED at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ----------------------------------------------------------------------------
USED_PORTS=" "
pick_port() {
    local port
    for _ in $(seq 1 200); do
        # Below the kernel's ephemeral range (32768 and up), where outgoing connections take theirs.
        port=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $port "* ]] && continue
        if ! ss -Htan "sport = :$port" | grep -q .; then
            USED_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    die "no free port"
}

# fill TEMPLATE PORT [MAX_KEYS]: the template from bench/ with @TMP@, @UPSTREAM_PORT@,
# @PROXY_PORT@, @ISSUER@ and @MAX_KEYS@ filled in, written to the temporary directory.
fill() {
    sed -e "s|@TMP@|$TMP|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
        -e "s|@FA_PORT@|${FA_PORT:-0}|g" -e "s|@AUX_PORT@|${AUX_PORT:-0}|g" \
        -e "s|@GRPC_PORT@|${GRPC_PORT:-0}|g" -e "s|@ADMIN_PORT@|${ADMIN_PORT:-0}|g" \
        -e "s|@PROXY_PORT@|$2|g" -e "s|@ISSUER@|$ISSUER|g" \
        -e "s|@MAX_KEYS@|${3:-$MAX_KEYS}|g" "$BENCH_DIR/$1" >"$TMP/$1"
}

# start NAME CORE CMD...: runs CMD pinned to CORE in the background; its pid in START_PID.
# (chrt, nice and taskset exec the command, so the pid is the command's own.)
START_PID=""
start() {
    local name=$1 core=$2
    shift 2
    "${PRIO[@]}" taskset -c "$core" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    START_PID=$!
    STARTED+=("$START_PID")
}

# wait_port PORT PID NAME [URL]: until something answers at URL (http://127.0.0.1:PORT/ by
# default; certificates are not checked: the readiness probe only).
wait_port() {
    local port=$1 pid=$2 name=$3 url=${4:-http://127.0.0.1:$1/}
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$TMP/$name.err" >&2 || true
            die "$name exited at start"
        fi
        if curl -sk -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "$name does not answer on port $port"
}

# The pids of a proxy: its main process and its children (nginx's worker).
pids_of() {
    echo "$1"
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | sed '/^$/d' || true
}

# utime+stime ticks of a process and its children (/proc/PID/stat counts all its threads).
ticks_of() {
    local total=0 p t
    for p in $(pids_of "$1"); do
        t=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# The ticks of a configuration: its process, and the second one that serves it, if any.
ticks_of_config() {
    local total
    total=$(ticks_of "${PID[$1]}")
    [[ -n ${EXTRA_PID[$1]:-} ]] && total=$((total + $(ticks_of "${EXTRA_PID[$1]}")))
    echo "$total"
}

# VmRSS of a process and its children, in KiB.
rss_of() {
    local total=0 p r
    for p in $(pids_of "$1"); do
        r=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null) || r=0
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# Busy ticks of one core, from /proc/stat (user, nice, system, irq, softirq, steal).
core_busy() {
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# status URL [curl args...]: the HTTP status code of a GET.
status() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || echo 000
}

expect() {
    local what=$1 want=$2 got=$3
    [[ $got == "$want" ]] || die "$what: expected HTTP $want, got $got"
    log "  ok: $what -> $got"
}

to_ms() { # a wrk latency such as 812.00us, 1.23ms or 1.02s, in milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

median() { # the median of the arguments
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

