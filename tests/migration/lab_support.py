"""What the two-host migration tests share: their binaries (from Bazel runfiles), the witness
guest's pending exceptions and dirtying workload, and the scenario runner (root and /dev/kvm
checked, one Lab, JUnit XML to $XML_OUTPUT_FILE, a closing "N passed, N failed" line)."""
import os
import sys
import time
import traceback
import xml.etree.ElementTree as ET

RUNFILES = os.environ.get("TEST_SRCDIR", "")
WORKSPACE = os.environ.get("TEST_WORKSPACE", "vexstate")


def runfile(path):
    for base in (os.path.join(RUNFILES, WORKSPACE), os.getcwd()):
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(path)


sys.path.insert(0, os.path.dirname(runfile("tools/two_hosts.py")))
from two_hosts import Binaries, Failure, Lab, check, parse_migration  # noqa: E402,F401 (re-exported)

BINARIES = Binaries(vexd=runfile("server/vexd"), worker=runfile("server/worker/vexd_worker"),
                    vexctl=runfile("client/vexctl"), make_certs=runfile("tools/make_certs.sh"))

MC_STATUS = "0xbc0000000000009f"
MC_ARGS = ["--bank", "3", "--status", MC_STATUS, "--addr", "0x12345000", "--misc", "0x86", "--mcg-status", "0x5"]
# 2048 pages (8 MiB) dirtied at 16384 pages/s = 64 MiB/s.
WORKLOAD = ["--workset-pages", "2048", "--dirty-pages-per-sec", "16384"]
NMI_HOLD_MASK = "0x4"  # the NMI handler (vector 2) holds: NMIs stay masked until it is cleared


def vec(report):
    return int(report["fields"].get("vec", "-1"))


def exc_reports(host, vm, vector):
    return [r for r in host.guest_reports(vm, "EXC") if vec(r) == vector]


def hold_nmi_and_make_one_pending(host, vm):
    """vCPU 1 takes an NMI and holds in its handler (NMIs masked); a second NMI is made pending
    (--pause-around) and stays pending while the VM runs. vCPU 0 keeps running the workload."""
    host.ctl("inject", "nmi", vm, "--vcpu", "1", "--pause-around")
    held = host.wait_reports(vm, "HOLD", lambda r: vec(r) == 2, 1)
    check(len(held) == 1, f"{host.name}/{vm}: the NMI handler did not hold")
    host.ctl("inject", "nmi", vm, "--vcpu", "1", "--pause-around")
    pending = host.ctl("pending", vm).stdout
    check("NMI" in pending, f"`vexctl pending {vm}` does not show the NMI:\n{pending}")
    check(len(exc_reports(host, vm, 2)) == 1, f"{host.name}/{vm}: the masked NMI was taken at once")


def release_nmi_and_expect_once(host, vm):
    """Clears the hold: the handler returns, NMIs unmask, and the pending one is taken.

    The pending NMI is vCPU 1's second exception since boot (seq 2); its first (seq 1) is the
    NMI the setup made it take before migrating, which is in this host's history only when
    the VM never left it. So exactly-once is checked on the NMIs after the first: exactly one,
    and it is seq 2."""
    host.ctl("guest", vm, "settings", "--hold-mask", "0")

    def after_first(r):
        return vec(r) == 2 and int(r["fields"]["cpu"]) == 1 and int(r["fields"]["seq"]) >= 2

    host.wait_reports(vm, "EXC", after_first, 1)
    time.sleep(0.5)
    got = [r for r in host.guest_reports(vm, "EXC") if after_first(r)]
    check(len(got) == 1 and int(got[0]["fields"]["seq"]) == 2,
          f"{host.name}/{vm}: expected the pending NMI (seq 2) exactly once, got {[r['line'] for r in got]}")


def run_scenarios(suite_name, tests, setup, epilogue=None):
    """Runs `tests` (those named, in part, on the command line; all without), each as
    test(*setup(lab)) in one Lab with network namespaces; a failure is reported with the hosts'
    logs and the next test runs. `epilogue` runs after the Lab is gone. The exit status."""
    only = sys.argv[1:]
    tests = [t for t in tests if not only or any(o in t.__name__ for o in only)]
    if os.geteuid() != 0:
        print("this test needs root (ip netns)", file=sys.stderr)
        return 1
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("/dev/kvm is not usable: this test needs real KVM", file=sys.stderr)
        return 1
    suite = ET.Element("testsuite", name=suite_name)
    failures = 0
    with Lab(BINARIES, use_netns=True) as lab:
        args = setup(lab)
        for test in tests:
            start = time.time()
            case = ET.SubElement(suite, "testcase", name=test.__name__, classname=suite_name)
            print(f"[ RUN      ] {test.__name__}", flush=True)
            try:
                test(*args)
                print(f"[       OK ] {test.__name__} ({time.time() - start:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next runs
                failures += 1
                detail = traceback.format_exc() if not isinstance(e, Failure) else str(e)
                ET.SubElement(case, "failure", message=str(e)[:500]).text = detail
                print(f"[  FAILED  ] {test.__name__}: {detail}", flush=True)
                for host in lab.hosts:
                    print(f"--- {host.name} vexd log (tail) ---\n{host.log_tail()}")
            case.set("time", f"{time.time() - start:.2f}")
    if epilogue:
        epilogue()
    suite.set("tests", str(len(tests)))
    suite.set("failures", str(failures))
    out = os.environ.get("XML_OUTPUT_FILE")
    if out:
        root_el = ET.Element("testsuites")
        root_el.append(suite)
        ET.ElementTree(root_el).write(out)
    print(f"{len(tests) - failures} passed, {failures} failed")
    return 1 if failures else 0
