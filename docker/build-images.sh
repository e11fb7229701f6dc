#!/usr/bin/env bash
# Builds the two images docker-compose.yml runs without pulling anything, both FROM scratch:
#   $BRIDGE_IMAGE (reflow-bridge:local)  a static reflow-bridge and examples/configs
#   $NATS_IMAGE   (reflow-nats:local)    the nats-server `reflow-bridge up` would run
# Then:  NATS_IMAGE=reflow-nats:local docker compose up --no-build
#
# Environment: PROFILE (release; `dev` builds faster and bigger), NATS_SERVER_BIN (a static
# nats-server 2.11+ to package; by default the project finds or provisions one, as its
# tests do). Linux hosts with a glibc or musl toolchain only: the binary is linked
# statically for the host's own target.
set -euo pipefail
cd "$(dirname "$0")/.."

BRIDGE_IMAGE="${BRIDGE_IMAGE:-reflow-bridge:local}"
NATS_IMAGE="${NATS_IMAGE:-reflow-nats:local}"
PROFILE="${PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

say() { echo "build-images: $*" >&2; }

host="$(rustc -vV | sed -n 's/^host: //p')"
case "$host" in
    *-linux-gnu | *-linux-musl) ;;
    *) say "error: a static Linux binary cannot be built on $host"; exit 1 ;;
esac

say "building a static reflow-bridge ($PROFILE profile, $host)"
# Flags for the target alone: build scripts and proc macros stay as they are.
rustflags_var="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
env "$rustflags_var=-C target-feature=+crt-static -C debuginfo=0" \
    cargo build --locked --quiet --profile "$PROFILE" --features cli --bin reflow-bridge --target "$host"
profile_dir="$PROFILE"
[ "$PROFILE" = dev ] && profile_dir=debug
bridge="$TARGET_DIR/$host/$profile_dir/reflow-bridge"

nats="$("$bridge" up --which)"
say "packaging nats-server from $nats"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir "$context/bridge" "$context/nats"
cp "$bridge" "$context/bridge/reflow-bridge"
cp -r examples/configs "$context/bridge/configs"
cp "$nats" "$context/nats/nats-server"

build() {
    local tag="$1" dockerfile="$2" dir="$3"
    say "building $tag"
    docker build --quiet --tag "$tag" --file "$dockerfile" "$dir" >/dev/null
}
build "$BRIDGE_IMAGE" docker/bridge.Dockerfile "$context/bridge"
build "$NATS_IMAGE" docker/nats.Dockerfile "$context/nats"
say "done: $BRIDGE_IMAGE and $NATS_IMAGE"
