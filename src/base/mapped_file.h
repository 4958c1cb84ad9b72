// A read-only memory mapping of a whole file. Pages are faulted in on demand, so tables that are
// read row by row (the per-layer embeddings) never become resident as a whole.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace g3n {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Whether [p, p + n) lies inside one read-only, private file mapping of this process (read from
// /proc/self/maps): there, release_mapped_pages loses nothing.
bool in_read_only_file_mapping(const void* p, size_t n);

// Unmaps the pages covering [p, p + n) from this process (MADV_DONTNEED): the resident set shrinks and
// the next read faults them in again from the page cache. Only for read-only file mappings (anonymous
// memory would read back as zeros): check with in_read_only_file_mapping first.
void release_mapped_pages(const void* p, size_t n);

}  // namespace g3n
