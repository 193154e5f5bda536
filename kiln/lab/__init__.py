"""Lab machines: real hosts on this machine, for trying and testing a stack.

Each node is a systemd-nspawn container with its own network namespace on the
lab's bridge, booted from a cached Debian root filesystem:

- `layout`    names and paths of everything one lab creates (for exact cleanup)
- `lifecycle` `Lab`: bring a stack's lab up, report its state, take it down
- `node`      one node: overlay root, identity, boot and stop
- `network`   bridge, veths, NAT rules and IP forwarding
- `rootfs`    the cached root filesystem; `wheelhouse` the Python wheels nodes install
              and the runtime venv archives they share
- `keys`      SSH key pairs for the lab's client and hosts
- `throttle`  shaping a node's link (tc tbf), for isolation tests and benches
"""
