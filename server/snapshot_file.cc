#include "server/snapshot_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/stubs/logging.h"

namespace vexstate {

namespace {

constexpr char kMagic[8] = {'V', 'E', 'X', 'S', 'N', 'A', 'P', '\0'};
// The newest format this build writes and reads; every older one keeps loading.
constexpr uint32_t kFormatVersion = v1::SNAPSHOT_FORMAT_V1;
// A format number above this is not one any vexstate ever wrote: the field is damaged. The
// format is bumped only for incompatible changes (snapshot.proto), so 255 is a generous bound.
// It turns most damage to the version field into DATA_LOSS rather than "newer".
constexpr uint32_t kMaxPlausibleVersion = 255;
constexpr uint64_t kPrefixBytes = 12;  // magic + version
// A memory chunk record carries at most this much memory (Vm::Capture cuts at the same size).
constexpr uint64_t kMaxChunkDataBytes = 1u << 20;
// No record may be longer than this; checked before a record is allocated or read.
constexpr uint32_t kMaxRecordBytes = 2u << 20;
constexpr size_t kSha256Bytes = 32;
// Writes are gathered into buffers of about this size.
constexpr size_t kWriteBufferBytes = 1u << 20;

void PutU32(uint32_t value, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint32_t GetU32(const char* bytes) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= uint32_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  return value;
}

// The file's errno as a Status whose message names the operation and the path.
absl::Status FileError(int err, absl::string_view op, const std::string& path) {
  return absl::ErrnoToStatus(err, absl::StrFormat("%s %s", op, path));
}

// An incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }

  void Update(absl::string_view bytes) {
    if (ok_) ok_ = EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) == 1;
  }

  // The digest of everything so far; the running state is left untouched.
  absl::StatusOr<std::string> Digest() const {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> copy(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (!ok_ || copy == nullptr || EVP_MD_CTX_copy_ex(copy.get(), ctx_.get()) != 1 ||
        EVP_DigestFinal_ex(copy.get(), digest, &size) != 1 || size != kSha256Bytes) {
      return absl::InternalError("OpenSSL EVP SHA-256 failed");
    }
    return std::string(reinterpret_cast<const char*>(digest), size);
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
  bool ok_ = false;
};

// ---------------------------------------------------------------------------------------------
// Writing

class Writer {
 public:
  Writer(int fd, const std::string& tmp_path) : fd_(fd), tmp_path_(tmp_path) {}

  // Appends bytes covered by the checksum.
  absl::Status Append(absl::string_view bytes) {
    sha_.Update(bytes);
    return AppendUnhashed(bytes);
  }

  // Appends a record (length prefix + bytes), covered by the checksum.
  absl::Status AppendRecord(const v1::SnapshotFileRecord& record) {
    std::string bytes;
    if (!record.SerializeToString(&bytes)) return absl::InternalError("cannot serialise a snapshot file record");
    if (bytes.size() > kMaxRecordBytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("snapshot file record %u is %u bytes, above the %u-byte limit a reader accepts", records_,
                          bytes.size(), kMaxRecordBytes));
    }
    std::string prefix;
    PutU32(static_cast<uint32_t>(bytes.size()), &prefix);
    if (absl::Status s = Append(prefix); !s.ok()) return s;
    ++records_;
    return Append(bytes);
  }

  // The trailer: its length prefix and bytes are not covered by the checksum it carries.
  absl::Status AppendTrailer(uint64_t memory_bytes, std::string* sha256) {
    absl::StatusOr<std::string> digest = sha_.Digest();
    if (!digest.ok()) return digest.status();
    *sha256 = *digest;
    v1::SnapshotFileRecord record;
    v1::SnapshotFileTrailer* trailer = record.mutable_trailer();
    trailer->set_sha256(*digest);
    trailer->set_records(records_);
    trailer->set_memory_bytes(memory_bytes);
    std::string bytes = record.SerializeAsString();
    std::string prefix;
    PutU32(static_cast<uint32_t>(bytes.size()), &prefix);
    if (absl::Status s = AppendUnhashed(prefix); !s.ok()) return s;
    return AppendUnhashed(bytes);
  }

  absl::Status Flush() {
    size_t done = 0;
    while (done < buffer_.size()) {
      ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return FileError(errno, "write", tmp_path_);
      done += static_cast<size_t>(n);
    }
    written_ += buffer_.size();
    buffer_.clear();
    return absl::OkStatus();
  }

  uint64_t bytes() const { return written_ + buffer_.size(); }

 private:
  absl::Status AppendUnhashed(absl::string_view bytes) {
    buffer_.append(bytes.data(), bytes.size());
    return buffer_.size() >= kWriteBufferBytes ? Flush() : absl::OkStatus();
  }

  const int fd_;
  const std::string& tmp_path_;
  Sha256 sha_;
  std::string buffer_;
  uint64_t written_ = 0;
  uint64_t records_ = 0;
};

// Writes the whole file to the open `fd` (the temporary file).
absl::Status WriteContents(const v1::Snapshot& snapshot, int fd, const std::string& tmp_path, SnapshotFileInfo* info) {
  Writer writer(fd, tmp_path);
  std::string prefix(kMagic, sizeof(kMagic));
  PutU32(kFormatVersion, &prefix);
  if (absl::Status s = writer.Append(prefix); !s.ok()) return s;

  v1::SnapshotFileRecord header;
  *header.mutable_header() = snapshot;
  header.mutable_header()->clear_memory();
  if (absl::Status s = writer.AppendRecord(header); !s.ok()) return s;

  // Chunks longer than a record may carry are cut; empty ones are left out.
  uint64_t memory_bytes = 0;
  uint64_t chunks = 0;
  for (const v1::MemoryChunk& chunk : snapshot.memory()) {
    const std::string& data = chunk.data();
    for (uint64_t offset = 0; offset < data.size(); offset += kMaxChunkDataBytes) {
      v1::SnapshotFileRecord record;
      record.mutable_chunk()->set_gpa(chunk.gpa() + offset);
      record.mutable_chunk()->set_data(data.substr(offset, kMaxChunkDataBytes));
      memory_bytes += record.chunk().data().size();
      ++chunks;
      if (absl::Status s = writer.AppendRecord(record); !s.ok()) return s;
    }
  }
  std::string sha256;
  if (absl::Status s = writer.AppendTrailer(memory_bytes, &sha256); !s.ok()) return s;
  if (absl::Status s = writer.Flush(); !s.ok()) return s;

  info->format_version = kFormatVersion;
  info->file_bytes = writer.bytes();
  info->memory_bytes_stored = memory_bytes;
  info->memory_chunks = chunks;
  info->sha256_hex = absl::BytesToHexString(sha256);
  return absl::OkStatus();
}

// fsync() of the directory holding `path`, so a rename into it is durable.
absl::Status SyncParentDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FileError(errno, "open directory", dir);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return FileError(err, "fsync directory", dir);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Reading

// Reads a snapshot file front to back, checksumming as it goes. Every error names the file
// and the offset where the problem starts.
class Reader {
 public:
  Reader(const std::string& path, int fd, uint64_t size) : path_(path), fd_(fd), size_(size) {}

  absl::Status Corrupt(uint64_t offset, absl::string_view what) const {
    return absl::DataLossError(absl::StrFormat("snapshot file %s is corrupt at offset %u: %s", path_, offset, what));
  }

  // Reads exactly `n` bytes of `what`; a short file is DATA_LOSS naming the offset.
  absl::Status ReadExact(size_t n, absl::string_view what, std::string* out) {
    out->resize(n);
    size_t done = 0;
    while (done < n) {
      ssize_t got = ::read(fd_, out->data() + done, n - done);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return FileError(errno, "read", path_);
      if (got == 0) {
        return absl::DataLossError(
            absl::StrFormat("snapshot file %s is truncated: %s at offset %u needs %u bytes, the file ends at %u", path_,
                            what, offset_, n, offset_ + done));
      }
      done += static_cast<size_t>(got);
    }
    offset_ += n;
    return absl::OkStatus();
  }

  // True if the file has no byte after the current offset.
  absl::StatusOr<bool> AtEnd() {
    char byte;
    for (;;) {
      ssize_t got = ::read(fd_, &byte, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return FileError(errno, "read", path_);
      return got == 0;
    }
  }

  // Magic and version. FAILED_PRECONDITION for a newer format, DATA_LOSS for anything that is
  // not the start of a snapshot file.
  absl::StatusOr<uint32_t> ReadPrefix() {
    std::string magic;
    if (size_ < sizeof(kMagic)) {
      // Too short for the magic: either a truncated snapshot or something else entirely.
      if (absl::Status s = ReadExact(size_, "magic", &magic); !s.ok()) return s;
      if (magic != absl::string_view(kMagic, size_)) return NotASnapshot();
      return absl::DataLossError(absl::StrFormat(
          "snapshot file %s is truncated: %u bytes, shorter than the %u-byte magic", path_, size_, sizeof(kMagic)));
    }
    if (absl::Status s = ReadExact(sizeof(kMagic), "magic", &magic); !s.ok()) return s;
    if (magic != absl::string_view(kMagic, sizeof(kMagic))) return NotASnapshot();
    sha_.Update(magic);
    std::string version_bytes;
    if (absl::Status s = ReadExact(4, "format version", &version_bytes); !s.ok()) return s;
    sha_.Update(version_bytes);
    const uint32_t version = GetU32(version_bytes.data());
    if (version == v1::SNAPSHOT_FORMAT_UNSPECIFIED || version > kMaxPlausibleVersion) {
      return Corrupt(sizeof(kMagic), absl::StrFormat("format version %u is not one vexstate ever wrote", version));
    }
    if (version > kFormatVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "snapshot file %s was written by a newer vexstate: format version %u, this build reads versions 1 to %u",
          path_, version, kFormatVersion));
    }
    return version;
  }

  // Reads the records of a version-1 file: header, chunks, trailer, end of file. Chunks go
  // into `snapshot` only if `keep_memory`.
  absl::Status ReadRecordsV1(bool keep_memory, v1::Snapshot* snapshot, SnapshotFileInfo* info) {
    uint64_t records = 0;
    uint64_t memory_bytes = 0;
    for (;;) {
      const uint64_t record_offset = offset_;
      if (offset_ == size_) {
        return absl::DataLossError(
            absl::StrFormat("snapshot file %s is truncated: it ends at offset %u after %u records, without the trailer",
                            path_, offset_, records));
      }
      std::string prefix;
      if (absl::Status s = ReadExact(4, "a record length", &prefix); !s.ok()) return s;
      const uint32_t length = GetU32(prefix.data());
      // Checked before anything is allocated for the record.
      if (length > kMaxRecordBytes) {
        return Corrupt(record_offset,
                       absl::StrFormat("record length %u is above the %u-byte limit", length, kMaxRecordBytes));
      }
      if (length > size_ - offset_) {
        return absl::DataLossError(
            absl::StrFormat("snapshot file %s is truncated: the record at offset %u needs %u bytes, only %u remain",
                            path_, record_offset, length, size_ - offset_));
      }
      std::string bytes;
      if (absl::Status s = ReadExact(length, "a record", &bytes); !s.ok()) return s;
      v1::SnapshotFileRecord record;
      bool parsed = false;
      {
        // Damage is reported below as DATA_LOSS naming the offset; protobuf's own log line
        // about it (e.g. "invalid UTF-8") would only repeat that on stderr.
        google::protobuf::LogSilencer quiet;
        parsed = record.ParseFromString(bytes);
      }
      if (!parsed) return Corrupt(record_offset, "the record does not parse");

      switch (record.record_case()) {
        case v1::SnapshotFileRecord::kHeader:
          if (records != 0) return Corrupt(record_offset, "a second header record");
          if (record.header().memory_size() != 0) return Corrupt(record_offset, "the header record carries memory");
          if (record.header().format() != static_cast<int>(info->format_version)) {
            return Corrupt(record_offset, absl::StrFormat("the header says format %d in a version %u file",
                                                          record.header().format(), info->format_version));
          }
          *snapshot = std::move(*record.mutable_header());
          break;
        case v1::SnapshotFileRecord::kChunk:
          if (records == 0) return Corrupt(record_offset, "a memory chunk before the header record");
          if (record.chunk().data().size() > kMaxChunkDataBytes) {
            return Corrupt(record_offset, absl::StrFormat("a memory chunk of %u bytes, above the %u-byte limit",
                                                          record.chunk().data().size(), kMaxChunkDataBytes));
          }
          memory_bytes += record.chunk().data().size();
          ++info->memory_chunks;
          if (keep_memory) *snapshot->add_memory() = std::move(*record.mutable_chunk());
          break;
        case v1::SnapshotFileRecord::kTrailer:
          if (records == 0) return Corrupt(record_offset, "the trailer comes before the header record");
          return CheckTrailer(record_offset, record.trailer(), records, memory_bytes, info);
        default:
          return Corrupt(record_offset, "a record of unknown kind");
      }
      sha_.Update(prefix);
      sha_.Update(bytes);
      ++records;
    }
  }

 private:
  absl::Status NotASnapshot() const {
    return absl::DataLossError(
        absl::StrFormat("%s is not a vexstate snapshot file (it does not start with \"VEXSNAP\\0\")", path_));
  }

  absl::Status CheckTrailer(uint64_t trailer_offset, const v1::SnapshotFileTrailer& trailer, uint64_t records,
                            uint64_t memory_bytes, SnapshotFileInfo* info) {
    absl::StatusOr<std::string> digest = sha_.Digest();
    if (!digest.ok()) return digest.status();
    if (trailer.sha256() != *digest) {
      return Corrupt(trailer_offset, absl::StrFormat("SHA-256 mismatch over bytes [0, %u): the trailer says %s, "
                                                     "the file hashes to %s",
                                                     trailer_offset, absl::BytesToHexString(trailer.sha256()),
                                                     absl::BytesToHexString(*digest)));
    }
    if (trailer.records() != records || trailer.memory_bytes() != memory_bytes) {
      return Corrupt(trailer_offset,
                     absl::StrFormat("the trailer counts %u records and %u memory bytes, the file has %u and %u",
                                     trailer.records(), trailer.memory_bytes(), records, memory_bytes));
    }
    absl::StatusOr<bool> at_end = AtEnd();
    if (!at_end.ok()) return at_end.status();
    if (!*at_end) {
      return Corrupt(offset_, absl::StrFormat("%u bytes follow the trailer", size_ - offset_));
    }
    info->memory_bytes_stored = memory_bytes;
    info->sha256_hex = absl::BytesToHexString(*digest);
    return absl::OkStatus();
  }

  const std::string& path_;
  const int fd_;
  const uint64_t size_;
  uint64_t offset_ = 0;
  Sha256 sha_;
};

absl::StatusOr<v1::Snapshot> ReadFile(const std::string& path, bool keep_memory, SnapshotFileInfo* info_out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrFormat("snapshot file %s does not exist", path));
    return FileError(errno, "open", path);
  }
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0) return FileError(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrFormat("snapshot file %s is not a regular file", path));
  }
  SnapshotFileInfo info;
  info.file_bytes = static_cast<uint64_t>(st.st_size);
  Reader reader(path, fd, info.file_bytes);
  absl::StatusOr<uint32_t> version = reader.ReadPrefix();
  if (!version.ok()) return version.status();
  info.format_version = *version;
  v1::Snapshot snapshot;
  // One reader per format version (all of them kept forever); there is only version 1 so far.
  if (absl::Status s = reader.ReadRecordsV1(keep_memory, &snapshot, &info); !s.ok()) return s;
  if (info_out != nullptr) *info_out = std::move(info);
  return snapshot;
}

}  // namespace

absl::StatusOr<SnapshotFileInfo> WriteSnapshotFile(const v1::Snapshot& snapshot, const std::string& path) {
  if (snapshot.format() != static_cast<int>(kFormatVersion)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot write %s: snapshot format %d, this build writes format %u", path, snapshot.format(), kFormatVersion));
  }
  const std::string tmp_path = absl::StrFormat("%s.tmp-%d", path, ::getpid());
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FileError(errno, "create", tmp_path);
  bool fd_open = true;
  bool renamed = false;
  // On any failure the temporary file goes, and `path` is as it was.
  absl::Cleanup discard = [&] {
    if (fd_open) ::close(fd);
    if (!renamed) ::unlink(tmp_path.c_str());
  };
  SnapshotFileInfo info;
  if (absl::Status s = WriteContents(snapshot, fd, tmp_path, &info); !s.ok()) return s;
  // Data durable before the rename makes it visible under `path`.
  if (::fsync(fd) != 0) return FileError(errno, "fsync", tmp_path);
  fd_open = false;
  if (::close(fd) != 0) return FileError(errno, "close", tmp_path);
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("rename %s to %s", tmp_path, path));
  }
  renamed = true;
  // The rename itself durable: the directory entry lives in the parent directory.
  if (absl::Status s = SyncParentDirectory(path); !s.ok()) return s;
  return info;
}

absl::StatusOr<v1::Snapshot> ReadSnapshotFile(const std::string& path, SnapshotFileInfo* info) {
  return ReadFile(path, /*keep_memory=*/true, info);
}

absl::StatusOr<v1::Snapshot> InspectSnapshotFile(const std::string& path, SnapshotFileInfo* info) {
  return ReadFile(path, /*keep_memory=*/false, info);
}

}  // namespace vexstate
