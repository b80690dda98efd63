#!/bin/sh
# guestfwd helper of images/lib/vm.sh: QEMU runs it for each TCP connection
# the guest opens to the forwarded address. Appends the host time (ms) to
# LOG, then connects the guest to 127.0.0.1:PORT.
#   fwd.sh LOG PORT
date +%s%3N >>"$1"
exec socat - "TCP:127.0.0.1:$2"
