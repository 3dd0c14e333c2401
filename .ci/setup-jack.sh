#!/usr/bin/env bash
# A MIDI system for Linux machines that have none (CI, containers, headless boxes): install JACK and
# jack-midi-clock from Debian's packages if jackd is missing, start a dummy JACK server (no sound card
# needed; period 64 at 48 kHz, 1.3 ms) if none runs, and wait until it answers.
#   bash .ci/setup-jack.sh          # idempotent: does nothing when a server already runs
set -euo pipefail

if ! command -v jackd >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # jackd2 asks whether to enable real-time priority: answer for it.
    echo "jackd2 jackd/tweak_rt_limits boolean true" | $sudo debconf-set-selections 2>/dev/null || true
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends jackd2 jack-midi-clock >/dev/null
fi

if [ "$(jack_wait -c 2>/dev/null || true)" != "running" ]; then
    # Detached, with its output in a log, so this script (and CI's pipe) does not wait on it.
    log="${TMPDIR:-/tmp}/sidl-jackd.log"
    nohup setsid jackd -d dummy -r 48000 -p 64 >"$log" 2>&1 </dev/null &
    if ! jack_wait -w -t 10 >/dev/null 2>&1; then
        echo "setup-jack: jackd did not start; its log ($log):" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
fi
# Say whether its cycles run under real-time scheduling: without it (a container without
# CAP_SYS_NICE) a loaded box makes the server miss cycles by the hundred, and tests/conftest.py then
# reports failing live tests as not judged.
log="${TMPDIR:-/tmp}/sidl-jackd.log"
scheduling="real-time"
if grep -q "Cannot use real-time scheduling" "$log" 2>/dev/null; then
    scheduling="NOT real-time: $(grep -m1 "Cannot use real-time scheduling" "$log")"
elif [ ! -r "$log" ]; then
    scheduling="started elsewhere"
fi
echo "setup-jack: JACK server running (jackd -d dummy -r 48000 -p 64; $scheduling)"
