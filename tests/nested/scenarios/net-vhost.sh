# Networking on the fast path: net.sh with the kernel's vhost-net moving the frames
# (vhost=on: tessera-vmm fails to start without /dev/vhost-net; L1 loads vhost_net).
VHOST=on
. /scenarios/net.sh
