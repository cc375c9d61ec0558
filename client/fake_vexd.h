// FakeVexd: an in-process stand-in for vexd on a Unix socket, for testing the
// client library and vexctl's RunInvocation without a real daemon. Its answers
// are fixed:
//  - every RPC needs "authorization: Bearer good-token" (else
//    UNAUTHENTICATED, as vexd);
//  - GetVm("missing") -> NOT_FOUND "no VM named 'missing'"; other names -> a
//    RUNNING VM;
//  - ListVms -> two VMs; CreateVm -> the config back, CREATED;
//  - QueryPending -> vm1 with a #MC pending on vCPU 0;
//  - WatchEvents -> three events (sequence 1-3, for request.vm), then: vm
//    "closes" ends the stream OK; otherwise it stays open until the client
//    cancels;
//  - MigrateVm("missing") -> NOT_FOUND; "refused" -> PREPARE, then FAILED with
//    error "FAILED_PRECONDITION: fewer MCE banks"; other VMs -> PREPARE,
//    PRECOPY rounds 1-2, STOP_AND_COPY, COMPLETED (result: 2 rounds, sha256
//    "ab12");
//  - QueryMigration -> PRECOPY round 2 of migration "m-1"; CancelMigration ->
//    CANCELLED;
//  - every other RPC: UNIMPLEMENTED.
//
// Thread-safety: the accessors are thread-safe.
#ifndef VEXSTATE_CLIENT_FAKE_VEXD_H_
#define VEXSTATE_CLIENT_FAKE_VEXD_H_

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "grpcpp/server.h"
#include "vexstate/v1/control.grpc.pb.h"
#include "vexstate/v1/migration.grpc.pb.h"

namespace vexstate::client {

inline constexpr char kFakeToken[] = "good-token";

class FakeVexd {
 public:
  // Listens on a new /tmp/fake-vexd-XXXXXX/vexd.sock (Unix socket paths must
  // fit 107 bytes, which Bazel's TEST_TMPDIR may not), removed again by the
  // destructor.
  FakeVexd();
  ~FakeVexd();

  // "unix:<socket>", for ConnectOptions::target and --host.
  const std::string& target() const { return target_; }
  // The authorization metadata of the last call ("" when it had none).
  std::string last_authorization() const;
  // How many WatchEvents streams ended because the client cancelled them.
  int cancelled_streams() const;

 private:
  class Services;
  std::string dir_;
  std::string target_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FAKE_VEXD_H_
