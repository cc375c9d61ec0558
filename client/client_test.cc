// VexClient against an in-process FakeVexd: the bearer token on every call,
// gRPC status -> absl::Status with code and message kept, and WatchEvents' ways
// of ending.
#include "client/client.h"

#include <cstdlib>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "client/fake_vexd.h"
#include "gtest/gtest.h"

namespace vexstate::client {
namespace {

class VexClientTest : public testing::Test {
 protected:
  VexClient Connect(const std::string& token = kFakeToken) {
    ConnectOptions options;
    options.target = vexd_.target();
    options.token = token;
    options.use_environment = false;
    options.deadline = absl::Seconds(10);
    absl::StatusOr<VexClient> client = VexClient::Connect(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  FakeVexd vexd_;
};

TEST_F(VexClientTest, SendsTheBearerToken) {
  VexClient client = Connect();
  absl::StatusOr<v1::ListVmsResponse> list = client.ListVms({});
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->vms_size(), 2);
  EXPECT_EQ(vexd_.last_authorization(), "Bearer good-token");
}

TEST_F(VexClientTest, NoTokenNoMetadata) {
  VexClient client = Connect("");
  absl::StatusOr<v1::ListVmsResponse> list = client.ListVms({});
  EXPECT_EQ(list.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(list.status().message(), "missing or unknown bearer token");
  EXPECT_EQ(vexd_.last_authorization(), "");
}

TEST_F(VexClientTest, KeepsCodeAndMessage) {
  VexClient client = Connect();
  v1::VmRef ref;
  ref.set_name("missing");
  absl::StatusOr<v1::VmInfo> vm = client.GetVm(ref);
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(vm.status().message(), "no VM named 'missing'");
}

TEST_F(VexClientTest, UnimplementedRpcIsReported) {
  VexClient client = Connect();
  absl::StatusOr<v1::HostCapabilities> caps = client.GetHostCapabilities({});
  EXPECT_EQ(caps.status().code(), absl::StatusCode::kUnimplemented);
}

TEST(VexClient, UnreachableVexdIsUnavailable) {
  ConnectOptions options;
  options.target = "unix:/tmp/no-such-vexd-dir/vexd.sock";
  options.use_environment = false;
  absl::StatusOr<VexClient> client = VexClient::Connect(options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(client->ListVms({}).status().code(),
            absl::StatusCode::kUnavailable);
  v1::WatchEventsRequest request;
  WatchOptions watch;
  watch.stop_when_idle = absl::Milliseconds(50);
  // Not mistaken for a quiet stream.
  EXPECT_EQ(client
                ->WatchEvents(
                    request, [](const v1::Event&) { return true; }, watch)
                .code(),
            absl::StatusCode::kUnavailable);
}

TEST(VexClient, BadOptionsFailToConnect) {
  ConnectOptions options;
  options.target = "tcp:nohost";
  options.use_environment = false;
  EXPECT_EQ(VexClient::Connect(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.target = "tcp:localhost:1";
  options.tls_ca_file = "/nonexistent/ca.pem";
  absl::StatusOr<VexClient> client = VexClient::Connect(options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(
      client.status().message(),
      "TLS CA: cannot open /nonexistent/ca.pem: No such file or directory");
}

TEST_F(VexClientTest, WatchStopsWhenTheCallbackSaysSo) {
  VexClient client = Connect();
  std::vector<uint64_t> seen;
  absl::Status status = client.WatchEvents({}, [&](const v1::Event& event) {
    seen.push_back(event.sequence());
    return seen.size() < 2;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2}));
}

TEST_F(VexClientTest, WatchEndsWithTheServer) {
  VexClient client = Connect();
  v1::WatchEventsRequest request;
  request.set_vm("closes");
  int count = 0;
  absl::Status status =
      client.WatchEvents(request, [&](const v1::Event& event) {
        EXPECT_EQ(event.vm(), "closes");
        ++count;
        return true;
      });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(count, 3);
}

TEST_F(VexClientTest, WatchStopsWhenIdle) {
  VexClient client = Connect();
  WatchOptions options;
  options.stop_when_idle = absl::Milliseconds(200);
  int count = 0;
  absl::Status status = client.WatchEvents(
      {}, [&](const v1::Event&) { return ++count > 0; }, options);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(count, 3);
}

TEST_F(VexClientTest, WatchCancelledFromAnotherThread) {
  VexClient client = Connect();
  WatchCanceller canceller;
  WatchOptions options;
  options.canceller = &canceller;
  absl::Notification third;
  std::thread cancel([&] {
    third.WaitForNotification();
    canceller.Cancel();
  });
  absl::Status status = client.WatchEvents(
      {},
      [&](const v1::Event& event) {
        if (event.sequence() == 3) third.Notify();
        return true;
      },
      options);
  cancel.join();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(canceller.cancelled());
  // A cancelled canceller stops the next call before it starts.
  int count = 0;
  EXPECT_TRUE(
      client
          .WatchEvents(
              {}, [&](const v1::Event&) { return ++count > 0; }, options)
          .ok());
  EXPECT_EQ(count, 0);
}

TEST_F(VexClientTest, ConcurrentCallsOnOneClient) {
  VexClient client = Connect();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (client.ListVms({}).ok()) ++ok;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 80);
}

}  // namespace
}  // namespace vexstate::client
