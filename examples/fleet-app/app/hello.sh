#!/bin/sh
# The "service": counts heartbeats into $1/heartbeat once a second.
home="$1"
n=0
while :; do
    n=$((n + 1))
    echo "$n" > "$home/heartbeat.new" && mv "$home/heartbeat.new" "$home/heartbeat"
    sleep 1
done
