#!/bin/sh
# limit.sh - run one test of `make check` under a wall-clock limit
# (Makefile.am's LOG_COMPILER):
#
#   tests/limit.sh TEST [ARGS...]
#
# A test still running after $KV_TEST_LIMIT seconds (default 1500; 0: no
# limit) is a hung test: the log gets the processes still running under it,
# then the test's process group gets SIGTERM (the scripts' EXIT traps stop
# their simulators and servers), SIGKILL 30 s later, and the test is an
# ERROR. Without it a hang in one test held the whole suite until CI gave up
# on it, with nothing in the log to say which test hung.
# Every log ends with the test's time ("limit.sh: TEST took N s"), which
# tests/run-suite.sh lists, slowest first.
# With KV_TEST_LOGDIR set (run-suite.sh, for `make distcheck`, which removes
# its build tree when it passes), a copy of the test's log is left there as
# TEST.log, and the exit status as TEST.rc.
limit=${KV_TEST_LIMIT:-1500}
name=$(basename "$1")
start=$(date +%s)
if [ "$limit" -gt 0 ] 2>/dev/null; then
    timeout --kill-after=30 "$limit" "$@" &
    tpid=$!
    # timeout runs the test in a process group of its own, out of reach of
    # a terminal's Ctrl-C: pass an interrupt on (timeout hands it to the test)
    trap 'kill -TERM "$tpid" 2>/dev/null' HUP INT TERM
    # a few seconds before the limit: what is still running, for the log
    (
        while kill -0 "$tpid" 2>/dev/null; do
            if [ $(($(date +%s) - start)) -ge $((limit - 3)) ]; then
                echo "limit.sh: $name still running after $((limit - 3)) s; its processes:"
                pgid=$(ps -o pgid= -p "$tpid" | tr -d ' ')
                # timeout's own process group holds the test and its children
                ps -eo pgid=,pid=,etimes=,args= | awk -v g="${pgid:-x}" '$1 == g { $1 = ""; print "   " $0 }'
                break
            fi
            sleep 1
        done
    ) &
    wpid=$!
    wait "$tpid"
    rc=$?
    kill "$wpid" 2>/dev/null
    wait "$wpid" 2>/dev/null
    # timeout's 124 (or 137 after its SIGKILL), and only once the limit is
    # reached: a test's own exit status 124 stays what it is
    if { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ $(($(date +%s) - start)) -ge "$limit" ]; then
        echo "limit.sh: $name stopped after $(($(date +%s) - start)) s: over its limit of $limit s (KV_TEST_LIMIT)"
        rc=99   # a hard error for automake's test driver
    fi
else
    "$@"
    rc=$?
fi
echo "limit.sh: $name took $(($(date +%s) - start)) s"
# automake's test driver sends the output to the test's log file
if [ -n "${KV_TEST_LOGDIR:-}" ] && [ -f "/proc/$$/fd/1" ]; then
    cp "/proc/$$/fd/1" "$KV_TEST_LOGDIR/$name.log" && echo "$rc" >"$KV_TEST_LOGDIR/$name.rc"
fi
exit "$rc"
