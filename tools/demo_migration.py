#!/usr/bin/env python3
"""./vexstate demo: the mission in one command, on two local vexd hosts and real KVM.

  1. start two vexd hosts, A and B (network namespaces joined by a veth pair when run as root,
     else both on loopback), with mutual-TLS migration listeners;
  2. boot the witness guest on A with its memory workload (dirtying pages continuously);
  3. pause it and make an uncorrected machine check pending (bank 3) - the guest has not taken it;
  4. `vexctl migrate` it to B, showing the progress;
  5. on B the guest takes the #MC exactly once, with the bank values, and its own memory check
     finds every workload page intact; A's guest never saw it;
  6. clean up.

usage: demo_migration.py --bin DIR   (DIR: Bazel's bazel-bin with vexd, vexd_worker, vexctl built)
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from two_hosts import Binaries, Failure, Lab, check  # noqa: E402

VM = "demo"
MC_ARGS = ["--bank", "3", "--status", "0xbc0000000000009f", "--addr", "0x12345000", "--misc", "0x86",
           "--mcg-status", "0x5"]


def step(text):
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(text, prefix="   "):
    for line in text.rstrip("\n").splitlines():
        print(prefix + line)
    sys.stdout.flush()


def shell(host, *args):
    """Prints a vexctl command line as the operator would type it, runs it, shows its output."""
    print(f"   $ vexctl --host {host.name} {' '.join(args)}")
    show(host.ctl(*args).stdout, "     ")


def guest_lines(host, kinds):
    return [r["line"] for r in host.guest_reports(VM) if r.get("kind") in kinds]


def run(lab):
    a = lab.add_host("src", name="A")
    b = lab.add_host("dst", name="B")
    where = "network namespaces" if lab.use_netns else "loopback (not root: no network namespaces)"
    show(f"host A: vexd on unix:{a.socket}, migration listener {a.migration_address}\n"
         f"host B: vexd on unix:{b.socket}, migration listener {b.migration_address}\n"
         f"({where}; mutual TLS certificates from tools/make_certs.sh)")

    step("Boot the witness guest on host A, dirtying 2048 pages at 16384 pages/s (64 MiB/s)")
    a.create_running(VM, memory_mib=32, extra=["--workset-pages", "2048", "--dirty-pages-per-sec", "16384"])
    for line in guest_lines(a, {"READY"}):
        print(f"   guest@A: {line}")
    time.sleep(1.5)

    step("Pause it on A and make an uncorrected machine check pending on vCPU 0 (bank 3)")
    a.ctl("vm", "pause", VM)
    shell(a, "inject", "mce", VM, "--vcpu", "0", *MC_ARGS)
    shell(a, "pending", VM)
    check(not guest_lines(a, {"EXC"}), "the guest on A took an exception before the migration")

    step(f"Migrate it to host B: vexctl migrate {VM} --to {b.migration_address}")
    proc = subprocess.run(a.migrate_cmd(VM, b, "--max-downtime-ms", "300", json_out=False))
    check(proc.returncode == 0, f"vexctl migrate exited {proc.returncode}")

    step("On host B the guest takes the #MC exactly once, with the bank values")
    b.wait_reports(VM, "EXC", lambda r: True, 1)
    time.sleep(0.5)
    for line in guest_lines(b, {"EXC", "MCE", "MCB"}):
        print(f"   guest@B: {line}")
    taken = [r for r in b.guest_reports(VM, "EXC") if int(r["fields"].get("vec", -1)) == 18]
    check(len(taken) == 1, f"the guest on B took the #MC {len(taken)} times")
    shell(b, "guest", VM, "memcheck", "--wait-ms", "5000")
    check(b.memcheck(VM).get("bad") == 0, "the guest found damaged pages")
    show(f"host A lists: {a.vm_names() or 'no VMs'}; the guest on A reported no exception "
         f"({len(guest_lines(a, {'EXC'}))} EXC lines)")
    check(not guest_lines(a, {"EXC"}), "the guest on A took the #MC too")

    step("Done: the pending #MC crossed hosts and was taken once, where the VM runs now")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="bazel-bin with vexd, vexd_worker and vexctl")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    binaries = Binaries(vexd=os.path.join(args.bin, "server/vexd"),
                        worker=os.path.join(args.bin, "server/worker/vexd_worker"),
                        vexctl=os.path.join(args.bin, "client/vexctl"),
                        make_certs=os.path.join(here, "make_certs.sh"))
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("demo: /dev/kvm is not usable (needs real KVM)", file=sys.stderr)
        return 1
    step("Start two vexd hosts, A and B")
    try:
        with Lab(binaries, log=lambda text: show(text)) as lab:
            run(lab)
    except Failure as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
