#!/bin/bash
# Boots the x86_64 witness under QEMU/KVM with COM1 on this terminal, for a human.
#
#   bazel run //guests/x86_64:run_in_qemu               (15 s)
#   guests/x86_64/run_in_qemu.sh [witness.elf] [seconds]
#
# SeaBIOS takes ~5 s here before "VEX BOOT cpu=0 arch=x86_64" and "VEX READY cpu=0"; then a
# '.' about every 100 ms (no control block under QEMU: defaults, TSC assumed 2 GHz). COM1
# shares stdio with QEMU's monitor: press Ctrl-a c, then e.g. `nmi` or
# `mce 0 3 0xbc0000000000009f 0x5 0x12345000 0x86`, and Ctrl-a c again to see the guest's
# EXC/MCE/MCB lines. Extra QEMU arguments: QEMU_EXTRA="...". One vCPU: QEMU's APs never
# reach our entry.
# QEMU_EXTRA="-bios /usr/share/qemu/qboot.rom" boots in well under a second, but qboot leaves
# LAPIC LINT1 masked, so QEMU's `nmi`/inject-nmi no longer reach the guest.
set -euo pipefail

elf=${1:-.bazel/bin/guests/x86_64/witness.elf}
seconds=${2:-15}
if [[ ! -r "$elf" ]]; then
  echo "run_in_qemu: no image at $elf (bazel build //guests/x86_64:witness_elf)" >&2
  exit 2
fi

# -cpu host minus arch-capabilities: QEMU cannot set MSR 0x10a on this machine's KVM.
# timeout exits 124 when the time is up: that is the normal end here.
status=0
timeout --foreground "$seconds" qemu-system-x86_64 \
  -accel kvm -cpu host,-arch-capabilities -smp 1 -m 64 \
  -display none -net none -no-reboot \
  -serial mon:stdio \
  -kernel "$elf" \
  ${QEMU_EXTRA:-} || status=$?
echo
if [[ $status -eq 124 ]]; then
  echo "run_in_qemu: stopped after ${seconds} s"
  exit 0
fi
exit "$status"
