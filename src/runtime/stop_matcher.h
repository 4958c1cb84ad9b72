// Stop strings over streamed text: holds back the tail of the text that could still become a stop
// string, so nothing past a stop string is ever emitted. Shared by generate() and the server's step loop.
#pragma once
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace g3n {

class StopMatcher {
 public:
  explicit StopMatcher(const std::vector<std::string>& stops) : stops_(stops) {}

  // Appends `piece`; returns the text now safe to emit. Sets `stopped` when a stop string appeared
  // (the text before it is returned, the stop string and anything after it are dropped).
  std::string push(const std::string& piece, bool& stopped) {
    pending_ += piece;
    size_t cut = std::string::npos;
    for (const auto& s : stops_)
      if (!s.empty()) cut = std::min(cut, pending_.find(s));
    if (cut != std::string::npos) {
      stopped = true;
      std::string out = pending_.substr(0, cut);
      pending_.clear();
      return out;
    }
    size_t hold = 0;  // longest suffix of pending_ that is a proper prefix of some stop string
    for (const auto& s : stops_)
      for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
        if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
  }
  std::string flush() { return std::exchange(pending_, {}); }

 private:
  const std::vector<std::string>& stops_;
  std::string pending_;
};

}  // namespace g3n
