# Networking: the test guest on tessera-vmm with a virtio-net NIC of two queue pairs on a tap
# that tessera-vmm makes (L1 runs it as root); L1 gives the tap an address, serves 8 MiB of
# random data over HTTP (busybox httpd) and takes 8 MiB the guest sends (nc). The guest prints
# its NIC and the checksums of what it got and sent (tests/guest/init, tg.net); this prints
# those of what L1 served and got, for the host to compare. Frames move through tessera-vmm's
# own threads here (vhost=off); net-vhost.sh runs the same with the kernel's vhost-net.
VHOST=${VHOST:-off}
echo "NEST: scenario net: tessera-vmm, virtio-net on a tap, vhost=$VHOST"
mkdir -p /tmp/www
head -c 8388608 /dev/urandom > /tmp/www/blob
echo "NEST: net served md5=$(md5sum /tmp/www/blob | cut -d' ' -f1)"
(sleep 600 | nc -l -p 5002 > /tmp/up) &
tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.net" \
    --memory 512M --vcpus 2 --log info --net tap=tnet0,mac=52:54:00:12:34:56,vhost=$VHOST &
vmm=$!
# tessera-vmm made the tap before the guest's first instruction.
for i in $(seq 300); do ip link show tnet0 >/dev/null 2>&1 && break; sleep 0.1; done
ip addr add 10.77.0.1/24 dev tnet0 && ip link set tnet0 up && echo "NEST: net tap tnet0 up"
httpd -p 10.77.0.1:8080 -h /tmp/www
wait $vmm
rc=$?
echo "NEST: net vmm rc=$rc"
echo "NEST: net received md5=$(md5sum /tmp/up | cut -d' ' -f1) bytes=$(wc -c < /tmp/up)"
killall httpd nc 2>/dev/null
exit $rc
