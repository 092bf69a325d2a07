# wl-lib.sh - parsing the test workload's console log (tests/guest/workload.c),
# shared by the e2e scripts.  Source it from bash.
#   last_count LOG BOOT          the last count= of that boot id
#   wait_count LOG BOOT MIN SECS until a count >= MIN of that boot appears
#   log_tail LOG [N]             the last N lines, on one line
#   analyze STRICT BOOT FILE...  continuity of the files as one stream
#   console_check_rd RUNDIR BOOT WHAT  "check" through RUNDIR/console.sock:
#                                needs result=OK bad=0 (sets CHECK_LINE or WHY;
#                                needs $CONSOLE = tests/guest/console.py)
#   alive PID                    exists and is not a zombie
#   wait_ready_rd RUNDIR NAME SECS  until the workload of the vmctl instance
#                                in RUNDIR is ready with result=OK (sets GBOOT,
#                                or WHY when it is not or its QEMU died)
alive() {
    local st
    st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ]
}
last_count() {  # LOG BOOT : the last count= of that boot id
    tr -d '\r' <"$1" 2>/dev/null |
        sed -nE "s/^VMCKPT-WL boot=$2 count=([0-9]+) gen=[0-9]+ .*/\1/p" | tail -n 1
}
wait_count() {  # LOG BOOT MIN SECS : until a count >= MIN of that boot appears
    local end=$((SECONDS + $4)) c
    while :; do
        c=$(last_count "$1" "$2")
        [ -n "$c" ] && [ "$c" -ge "$3" ] && return 0
        [ $SECONDS -ge $end ] && return 1
        sleep 0.2
    done
}
log_tail() { tr -d '\r' <"$1" 2>/dev/null | tail -n "${2:-3}" | tr '\n' '|' | cut -c1-400; }
wait_ready_rd() {  # RUNDIR NAME SECS
    local rd=$1 name=$2 i qpid=""
    for ((i = 0; i < $3 * 5; i++)); do
        grep -aq ' ready .*result=' "$rd/console.log" 2>/dev/null && break
        [ -z "$qpid" ] && qpid=$(cat "$rd/qemu.pid" 2>/dev/null)
        if [ -n "$qpid" ] && ! alive "$qpid"; then
            WHY="QEMU of $name died while booting: $(tail -n 3 "$rd/qemu.log" 2>/dev/null | tr '\n' '|')"
            return 1
        fi
        sleep 0.2
    done
    GBOOT=$(tr -d '\r' <"$rd/console.log" 2>/dev/null |
        sed -nE 's/^VMCKPT-WL boot=([0-9a-f]+) ready .*result=OK.*/\1/p' | tail -n 1)
    if [ -z "$GBOOT" ]; then
        WHY="guest $name not ready (result=OK) within $3 s: $(log_tail "$rd/console.log")"
        return 1
    fi
}

# analyze STRICT BOOT FILE... : reads the files as one stream and checks that
# every workload line belongs to BOOT, that the count lines are consecutive,
# that nothing reports BAD and that there is no reboot (start/ready line after
# a count line; anywhere when STRICT=1).  Prints "OK FIRST LAST N" or "ERR: ..".
analyze() {
    local strict=$1 boot=$2; shift 2
    cat -- "$@" 2>/dev/null | tr -d '\r' | awk -v boot="$boot" -v strict="$strict" '
        index(substr($0, 2), "VMCKPT-WL") { print "ERR: bytes lost, lines spliced: " $0; bad = 1; exit }
        match($0, /^VMCKPT-WL boot=[0-9a-f]+ /) {
            b = substr($0, 16, RLENGTH - 16); rest = substr($0, RLENGTH + 1)
            if (b != boot) { print "ERR: other boot id: " $0; bad = 1; exit }
            if (rest ~ /^(start|ready) / && (strict || n > 0)) {
                print "ERR: the guest rebooted: " $0; bad = 1; exit }
            if (rest ~ /BAD/) { print "ERR: the workload says BAD: " $0; bad = 1; exit }
            if (rest ~ /^count=[0-9]+ gen=[0-9]+ /) {
                split(rest, f, /[= ]/); c = f[2] + 0
                if (n > 0 && c != prev + 1) {
                    print "ERR: count=" prev " is followed by count=" c; bad = 1; exit }
                if (n == 0) first = c
                prev = c; n++
            }
            next
        }
        /VMCKPT-WL exited|Kernel panic|BUG:|Oops/ { print "ERR: " $0; bad = 1; exit }
        END { if (!bad) print "OK " (n ? first : -1) " " (n ? prev : -1) " " n + 0 }'
}

console_check_rd() {
    local line
    line=$(timeout 40 python3 "$CONSOLE" "$1/console.sock" --send check \
        --expect 'check .*result=' --timeout 30 2>&1)
    if [[ $line != *"boot=$2 check "* || $line != *" bad=0 "* || $line != *"result=OK"* ]]; then
        WHY="console check of $3: '$line'"
        return 1
    fi
    CHECK_LINE=$line
}
