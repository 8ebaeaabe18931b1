# swtpm.sh - source it to get a private TPM 2.0 simulator for one test run.
# Needs $T (a scratch directory removed by the caller). Starts swtpm on
# loopback with its state, EK certificates (made offline by swtpm's local
# CA) and CA in $T/swtpm, and sets:
#   KV_TPM_DIR, KV_TPM_PORT, KV_TPM_TCTI   where and how to reach it
#   $KV_TPM_DIR/keyvault.conf              a tpm-only libkeyvault config
# and the functions tpm_start, tpm_stop (the state survives a restart),
# abrmd_start, abrmd_stop (tpm2-abrmd on a private D-Bus session bus, for
# tests that need several processes on the TPM at once). tpm_stop and
# abrmd_stop run from the caller's EXIT trap: call swtpm_cleanup there.
# Without $T (a helper run directly, not sourced by a test) its files and a
# simulator nobody stops would land at the root of the file system
[ -n "${T:-}" ] && [ -d "$T" ] || { echo "swtpm.sh: \$T (a scratch directory) is not set" >&2; exit 2; }
KV_TPM_DIR=$T/swtpm
# killed (tests/limit.sh's SIGTERM), the caller's EXIT trap still stops swtpm
trap 'exit 143' HUP INT TERM
# libkeyvault's own files (the creation lock) stay in the scratch directory
KEYVAULT_HOME=${KEYVAULT_HOME:-$KV_TPM_DIR/home}
export KEYVAULT_HOME
mkdir -p "$KV_TPM_DIR/state" "$KV_TPM_DIR/localca"
cat >"$KV_TPM_DIR/swtpm-localca.conf" <<CONF
statedir = $KV_TPM_DIR/localca
signingkey = $KV_TPM_DIR/localca/signkey.pem
issuercert = $KV_TPM_DIR/localca/issuercert.pem
certserial = $KV_TPM_DIR/localca/certserial
CONF
cat >"$KV_TPM_DIR/swtpm_setup.conf" <<CONF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $KV_TPM_DIR/swtpm-localca.conf
create_certs_tool_options = /etc/swtpm-localca.options
active_pcr_banks = sha256
CONF
if ! swtpm_setup --tpm2 --tpmstate "$KV_TPM_DIR/state" --config "$KV_TPM_DIR/swtpm_setup.conf" \
        --create-ek-cert --create-platform-cert --overwrite >"$KV_TPM_DIR/setup.log" 2>&1; then
    echo "swtpm.sh: swtpm_setup with EK certificates failed; without them:" >&2
    cat "$KV_TPM_DIR/setup.log" >&2
    swtpm_setup --tpm2 --tpmstate "$KV_TPM_DIR/state" --createek --overwrite >/dev/null 2>&1 ||
        { echo "swtpm.sh: swtpm_setup failed" >&2; exit 1; }
fi

tpm_start() {
    swtpm socket --tpm2 --tpmstate "dir=$KV_TPM_DIR/state" \
        --server "type=tcp,port=$KV_TPM_PORT,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((KV_TPM_PORT + 1)),bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear --daemon --pid "file=$KV_TPM_DIR/swtpm.pid" \
        --log "file=$KV_TPM_DIR/swtpm.log" 2>>"$KV_TPM_DIR/start.log" || return 1
    # the daemon writes its pid file once it listens; a loaded machine can
    # take seconds (a restarted swtpm was given up on after one)
    _i=0
    while [ $_i -lt 300 ]; do
        [ -s "$KV_TPM_DIR/swtpm.pid" ] && return 0
        sleep 0.1
        _i=$((_i + 1))
    done
    return 1
}
tpm_stop() {
    if [ -s "$KV_TPM_DIR/swtpm.pid" ]; then
        _pid=$(cat "$KV_TPM_DIR/swtpm.pid")
        kill "$_pid" 2>/dev/null
        # gone, not merely told to go (its port is free for a restart): up
        # to 30 s on a loaded machine, then SIGKILL
        for _ in $(seq 1 300); do
            kill -0 "$_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$_pid" 2>/dev/null; then
            kill -9 "$_pid" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "$_pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$KV_TPM_DIR/swtpm.pid"
    fi
}
abrmd_start() {
    out=$(dbus-daemon --session --fork --print-address=1 --print-pid=1) || return 1
    DBUS_SESSION_BUS_ADDRESS=$(echo "$out" | sed -n 1p)
    KV_DBUS_PID=$(echo "$out" | sed -n 2p)
    export DBUS_SESSION_BUS_ADDRESS
    tpm2-abrmd --session --allow-root --tcti="$KV_TPM_TCTI" --flush-all \
        >"$KV_TPM_DIR/abrmd.log" 2>&1 &
    KV_ABRMD_PID=$!
    KV_ABRMD_TCTI=tabrmd:bus_type=session
    for _ in $(seq 1 300); do   # up to 30 s: slow to start on a loaded machine
        TPM2TOOLS_TCTI=$KV_ABRMD_TCTI tpm2_getrandom 1 >/dev/null 2>&1 && return 0
        kill -0 "$KV_ABRMD_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# abrmd_running: tpm2-abrmd is there and not a zombie (our own child: it is
# one until waited for, so not kill -0). Shell built-ins only: a script that
# exports LD_PRELOAD=libasan (openssl-provider.sh in the sanitized build) ran
# ps(1) under it, and that ps hung in a futex for good (session 15).
abrmd_running() {
    { read -r _st <"/proc/$KV_ABRMD_PID/stat"; } 2>/dev/null || return 1
    case ${_st##*) } in Z*|X*) return 1 ;; esac
    return 0
}
abrmd_stop() {
    if [ -n "${KV_ABRMD_PID:-}" ] && kill "$KV_ABRMD_PID" 2>/dev/null; then
        # up to 10 s (a worker thread can be blocked in a TCTI receive), then SIGKILL
        _i=0
        while [ $_i -lt 100 ] && abrmd_running; do sleep 0.1; _i=$((_i + 1)); done
        if abrmd_running; then kill -9 "$KV_ABRMD_PID" 2>/dev/null || :; fi
        wait "$KV_ABRMD_PID" 2>/dev/null || :
    fi
    [ -n "${KV_DBUS_PID:-}" ] && kill "$KV_DBUS_PID" 2>/dev/null
    KV_ABRMD_PID=
    KV_DBUS_PID=
}
swtpm_cleanup() {
    abrmd_stop
    tpm_stop
}

# a free pair of loopback ports, below the kernel's ephemeral range: while
# swtpm is down (faults.sh kills and restarts it), a port in that range can
# go to any outgoing connection, the signer's own retries included - a TCP
# connect to 127.0.0.1:P that the kernel gives source port P connects to
# itself and holds P - and swtpm could not start again (seen once in CI)
read -r eph_lo _ 2>/dev/null </proc/sys/net/ipv4/ip_local_port_range || eph_lo=32768
pairs=$(( (eph_lo - 20000) / 2 ))
[ "$pairs" -ge 100 ] || pairs=10000   # an odd range: as before, anywhere from 20000
for _ in 1 2 3 4 5 6 7 8 9 10; do
    KV_TPM_PORT=$(( (($$ + $(date +%N | sed 's/^0*//;s/^$/0/')) % pairs) * 2 + 20000 ))
    tpm_start && break
    KV_TPM_PORT=
done
[ -n "$KV_TPM_PORT" ] || { echo "swtpm.sh: cannot start swtpm" >&2; cat "$KV_TPM_DIR/start.log" >&2; exit 1; }
KV_TPM_TCTI=swtpm:host=127.0.0.1,port=$KV_TPM_PORT
export KV_TPM_DIR KV_TPM_PORT KV_TPM_TCTI
# the suite fails authorisations on purpose: keep dictionary-attack
# lockout from locking the simulator for the rest of the run
TPM2TOOLS_TCTI=$KV_TPM_TCTI tpm2_dictionarylockout --setup-parameters --max-tries=1000 \
    --recovery-time=1 --lockout-recovery-time=1 >/dev/null 2>&1
printf 'software store passphrase\n' >"$KV_TPM_DIR/pass"
chmod 600 "$KV_TPM_DIR/pass"
cat >"$KV_TPM_DIR/keyvault.conf" <<CONF
[keyvault]
backends = tpm, software

[tpm]
tcti = $KV_TPM_TCTI
keys = $KV_TPM_DIR/keys

[software]
store = $KV_TPM_DIR/soft
passphrase = file:$KV_TPM_DIR/pass
kdf_iterations = 1000
CONF
