#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <utility>

#include "base/error.h"

namespace g3n {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("cannot stat ", path, ": ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, " is not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail("cannot map ", path, ": ", std::strerror(e));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() { reset(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    reset();
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void MappedFile::reset() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

bool in_read_only_file_mapping(const void* p, size_t n) {
  if (p == nullptr || n == 0) return false;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p), end = begin + n;
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  if (!f) return false;
  bool found = false;
  char line[4096];
  while (!found && std::fgets(line, sizeof line, f)) {
    // "start-end perms offset dev inode path"
    uintptr_t lo = 0, hi = 0;
    char perms[8] = {};
    unsigned long long offset = 0, inode = 0;
    char dev[32] = {};
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %llx %31s %llu", &lo, &hi, perms, &offset, dev, &inode) != 6)
      continue;
    found = begin >= lo && end <= hi && inode != 0 && perms[1] == '-' && perms[3] == 'p';
  }
  std::fclose(f);
  return found;
}

void release_mapped_pages(const void* p, size_t n) {
  if (p == nullptr || n == 0) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advice: failure only keeps pages
}

}  // namespace g3n
