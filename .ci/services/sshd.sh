#!/usr/bin/env bash
# An sshd of the tests' own on 127.0.0.1:2222, root key auth only; the system sshd config is
# left alone. `sshd.sh packages|start|stop`. Needs root; no systemd.
set -euo pipefail
RUN=/run/ipcluster-sshd
CONF=$RUN/sshd_config
PORT=${IPCLUSTER_SSH_PORT:-2222}

packages() {
  [ -x /usr/sbin/sshd ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends openssh-server openssh-client >/dev/null
}

start() {
  packages
  install -d -m 0755 /run/sshd "$RUN"
  install -d -m 0700 /root/.ssh
  [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
  [ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
  grep -qF "$(cat /root/.ssh/id_ed25519.pub)" /root/.ssh/authorized_keys 2>/dev/null \
    || cat /root/.ssh/id_ed25519.pub >> /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  cat > "$CONF" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
PidFile $RUN/sshd.pid
CONF
  # a shell killed during pyenv's rehash leaves a lock that stalls every later login by 60 s
  for shims in /root/.pyenv/shims; do
    [ -e "$shims/.pyenv-shim" ] && ! pgrep -f "pyenv-rehash" >/dev/null && rm -f "$shims/.pyenv-shim"
  done
  if ! { [ -f "$RUN/sshd.pid" ] && kill -0 "$(cat "$RUN/sshd.pid")" 2>/dev/null; }; then
    /usr/sbin/sshd -t -f "$CONF"
    /usr/sbin/sshd -f "$CONF" -E "$RUN/sshd.log"
  fi
  ssh -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
    -o LogLevel=ERROR 127.0.0.1 true
  echo "sshd: listening on 127.0.0.1:$PORT"
}

stop() {
  [ -f "$RUN/sshd.pid" ] && kill "$(cat "$RUN/sshd.pid")" 2>/dev/null || true
}

"$@"
