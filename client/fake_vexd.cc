#include "client/fake_vexd.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_context.h"

namespace vexstate::client {
namespace {

constexpr char kPending[] = R"pb(
  vms {
    vm: "vm1"
    state: VM_RUNNING
    vcpus {
      vcpu_index: 0
      x86_64 {
        exception { pending: true vector: 18 }
        machine_check {
          mcg_status: 0x5
          banks { index: 3 status: 0xbc0000000000009f }
        }
      }
    }
  })pb";

// MigrateVm's messages (text format), for a VM that moves and for "refused".
constexpr const char* kMigration[] = {
    "phase: MIGRATION_PREPARE",
    R"pb(phase: MIGRATION_PRECOPY
         round: 1
         bytes_sent: 16777216
         pages_sent: 4096
         pages_remaining: 4096)pb",
    R"pb(phase: MIGRATION_PRECOPY
         round: 2
         bytes_sent: 25165824
         pages_sent: 6144
         pages_remaining: 100)pb",
    "phase: MIGRATION_STOP_AND_COPY",
    R"pb(phase: MIGRATION_COMPLETED
         result {
           outcome: MIGRATION_COMPLETED
           rounds: 2
           memory_sha256: "ab12"
         })pb"};
constexpr const char* kRefusedMigration[] = {
    "phase: MIGRATION_PREPARE",
    R"pb(phase: MIGRATION_FAILED
         result {
           outcome: MIGRATION_FAILED
           error: "FAILED_PRECONDITION: fewer MCE banks"
         })pb"};

}  // namespace

class FakeVexd::Services final : public v1::VmService::Service,
                                 public v1::ExceptionService::Service,
                                 public v1::EventService::Service,
                                 public v1::MigrationService::Service {
 public:
  grpc::Status GetVm(grpc::ServerContext* context, const v1::VmRef* request,
                     v1::VmInfo* response) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    if (request->name() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no VM named 'missing'");
    }
    response->set_name(request->name());
    response->set_state(v1::VM_RUNNING);
    return grpc::Status::OK;
  }

  grpc::Status ListVms(grpc::ServerContext* context, const v1::ListVmsRequest*,
                       v1::ListVmsResponse* response) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    response->add_vms()->set_name("vm1");
    response->add_vms()->set_name("vm2");
    return grpc::Status::OK;
  }

  grpc::Status CreateVm(grpc::ServerContext* context,
                        const v1::CreateVmRequest* request,
                        v1::VmInfo* response) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    response->set_name(request->config().name());
    *response->mutable_config() = request->config();
    response->set_state(v1::VM_CREATED);
    return grpc::Status::OK;
  }

  grpc::Status QueryPending(grpc::ServerContext* context,
                            const v1::QueryPendingRequest*,
                            v1::QueryPendingResponse* response) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    google::protobuf::TextFormat::ParseFromString(kPending, response);
    return grpc::Status::OK;
  }

  grpc::Status WatchEvents(grpc::ServerContext* context,
                           const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::Event>* writer) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    for (int i = 1; i <= 3; ++i) {
      v1::Event event;
      event.set_sequence(i);
      event.set_vm(request->vm());
      event.mutable_injection()->set_what(absl::StrCat("event ", i));
      writer->Write(event);
    }
    if (request->vm() == "closes") return grpc::Status::OK;
    while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(5));
    absl::MutexLock lock(&mu_);
    ++cancelled_streams_;
    return grpc::Status::CANCELLED;
  }

  grpc::Status MigrateVm(
      grpc::ServerContext* context, const v1::MigrateVmRequest* request,
      grpc::ServerWriter<v1::MigrationProgress>* writer) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    if (request->vm() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no VM named 'missing'");
    }
    absl::Span<const char* const> steps = kMigration;
    if (request->vm() == "refused") steps = kRefusedMigration;
    for (const char* step : steps) {
      v1::MigrationProgress progress;
      google::protobuf::TextFormat::ParseFromString(step, &progress);
      progress.set_migration_id("m-1");
      if (progress.has_result()) {
        progress.mutable_result()->set_destination(request->destination());
      }
      writer->Write(progress);
    }
    return grpc::Status::OK;
  }

  grpc::Status QueryMigration(grpc::ServerContext* context,
                              const v1::QueryMigrationRequest* request,
                              v1::MigrationStatus* response) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    response->set_vm(request->vm());
    response->set_migration_id("m-1");
    response->set_phase(v1::MIGRATION_PRECOPY);
    response->mutable_last_progress()->set_phase(v1::MIGRATION_PRECOPY);
    response->mutable_last_progress()->set_round(2);
    return grpc::Status::OK;
  }

  grpc::Status CancelMigration(grpc::ServerContext* context,
                               const v1::CancelMigrationRequest* request,
                               v1::MigrationStatus* response) override {
    if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
    response->set_vm(request->vm());
    response->set_migration_id("m-1");
    response->set_phase(v1::MIGRATION_CANCELLED);
    return grpc::Status::OK;
  }

  std::string last_authorization() const {
    absl::MutexLock lock(&mu_);
    return last_authorization_;
  }
  int cancelled_streams() const {
    absl::MutexLock lock(&mu_);
    return cancelled_streams_;
  }

 private:
  grpc::Status Authorize(grpc::ServerContext* context) {
    std::string authorization;
    auto it = context->client_metadata().find("authorization");
    if (it != context->client_metadata().end()) {
      authorization = std::string(it->second.data(), it->second.size());
    }
    absl::MutexLock lock(&mu_);
    last_authorization_ = authorization;
    if (authorization != absl::StrCat("Bearer ", kFakeToken)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "missing or unknown bearer token");
    }
    return grpc::Status::OK;
  }

  mutable absl::Mutex mu_;
  std::string last_authorization_ ABSL_GUARDED_BY(mu_);
  int cancelled_streams_ ABSL_GUARDED_BY(mu_) = 0;
};

FakeVexd::FakeVexd() : services_(std::make_unique<Services>()) {
  char dir[] = "/tmp/fake-vexd-XXXXXX";
  if (mkdtemp(dir) == nullptr) std::abort();
  dir_ = dir;
  target_ = absl::StrCat("unix:", dir_, "/vexd.sock");
  grpc::ServerBuilder builder;
  builder.AddListeningPort(target_, grpc::InsecureServerCredentials());
  builder.RegisterService(
      static_cast<v1::VmService::Service*>(services_.get()));
  builder.RegisterService(
      static_cast<v1::ExceptionService::Service*>(services_.get()));
  builder.RegisterService(
      static_cast<v1::EventService::Service*>(services_.get()));
  builder.RegisterService(
      static_cast<v1::MigrationService::Service*>(services_.get()));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) std::abort();
}

FakeVexd::~FakeVexd() {
  server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  unlink(absl::StrCat(dir_, "/vexd.sock").c_str());
  rmdir(dir_.c_str());
}

std::string FakeVexd::last_authorization() const {
  return services_->last_authorization();
}

int FakeVexd::cancelled_streams() const {
  return services_->cancelled_streams();
}

}  // namespace vexstate::client
