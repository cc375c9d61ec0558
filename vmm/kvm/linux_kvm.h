// <linux/kvm.h> for C++: include this header, never <linux/kvm.h> directly.
//
// Why: Debian's linux-libc-dev 6.1.192 (pulled in by the arm64 multiarch
// packages) declares the flexible arrays of the KVM uapi structs with
// __DECLARE_FLEX_ARRAY, whose C definition wraps the array in `struct { struct
// { } __empty_x; T x[]; }`. In C an empty struct has size 0; in C++ it has size
// 1, so in C++ sizeof(kvm_msrs) becomes 16 (kernel: 8), the entries move to
// offset 16, sizeof(kvm_cpuid2) becomes 12, sizeof(kvm_xsave) 4100 — and every
// ioctl number that encodes those sizes (KVM_GET_MSRS, KVM_SET_MSRS,
// KVM_GET_SUPPORTED_CPUID, KVM_SET_CPUID2, KVM_GET_MSR_INDEX_LIST,
// KVM_GET/SET_XSAVE, KVM_GET_REG_LIST...) is one the kernel does not know: they
// fail with EINVAL. Upstream fixed the macro for C++ in Linux 6.5
// ("uapi: stddef.h: Fix __DECLARE_FLEX_ARRAY for C++"): a zero-length array. We
// apply the same definition here, before <linux/kvm.h> is expanded, and check
// the kernel's layout below so a translation unit that got the broken layout
// fails to compile instead of failing at run time.
#ifndef VEXSTATE_VMM_KVM_LINUX_KVM_H_
#define VEXSTATE_VMM_KVM_LINUX_KVM_H_

#ifdef _LINUX_KVM_H
#error \
    "<linux/kvm.h> was included before vmm/kvm/linux_kvm.h: include only vmm/kvm/linux_kvm.h"
#endif

#include <linux/stddef.h>

#ifdef __cplusplus
#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]
#endif

#include <linux/kvm.h>

#include <cstddef>

// The kernel's layout (what the ioctl numbers encode).
#if defined(__x86_64__)
static_assert(sizeof(kvm_msrs) == 8 && offsetof(kvm_msrs, entries) == 8,
              "kvm_msrs layout");
static_assert(sizeof(kvm_msr_list) == 4 && offsetof(kvm_msr_list, indices) == 4,
              "kvm_msr_list layout");
static_assert(sizeof(kvm_cpuid2) == 8 && offsetof(kvm_cpuid2, entries) == 8,
              "kvm_cpuid2 layout");
static_assert(sizeof(kvm_xsave) == 4096, "kvm_xsave layout");
#endif
static_assert(sizeof(kvm_reg_list) == 8 && offsetof(kvm_reg_list, reg) == 8,
              "kvm_reg_list layout");
static_assert(sizeof(kvm_signal_mask) == 4, "kvm_signal_mask layout");

#endif  // VEXSTATE_VMM_KVM_LINUX_KVM_H_
