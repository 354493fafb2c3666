// Collecting problems found while checking an artifact: readers throw the first one (plus a
// count of the rest), `kvq inspect` lists them all. Plus the checks every reader repeats: shape
// equality and finite values. Not here: schema knowledge (which datasets a file must have).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvq::artifact {

// Keeps the first kKept problems and counts the rest, so a corrupt file that yields millions of
// problems costs neither memory nor output.
class Problems {
 public:
  static constexpr size_t kKept = 20;
  // `where` is "<file>:<path>" (or a flag); `message` says what was expected and what was found.
  void add(const std::string& where, const std::string& message);
  bool empty() const { return n_ == 0; }
  size_t size() const { return n_; }  // all problems found, kept or not
  // The first kKept problems, each one line "<where>: <message>", in the order found; size()
  // minus list().size() more were counted but not kept.
  const std::vector<std::string>& list() const { return items_; }
  size_t n_omitted() const { return n_ - items_.size(); }
  // Throws kvq::Error "<first problem> (and N more)" if any were added; one line either way.
  void throw_if_any() const;

 private:
  std::vector<std::string> items_;
  size_t n_ = 0;
};

// "[6, 256]"; "[]" for a scalar.
std::string shape_string(const std::vector<int64_t>& shape);
int64_t numel(const std::vector<int64_t>& shape);

// Each check adds "expected shape [6, 256], found [6, 128]" or "expected finite values, found
// nan at index 17" under `where`, and returns whether the check passed.
bool check_shape(Problems& problems, const std::string& where, const std::vector<int64_t>& expected,
                 const std::vector<int64_t>& found);
bool check_finite(Problems& problems, const std::string& where, const float* values, size_t n);
bool check_finite(Problems& problems, const std::string& where, const double* values, size_t n);
template <typename T>
bool check_finite(Problems& problems, const std::string& where, const std::vector<T>& values) {
  return check_finite(problems, where, values.data(), values.size());
}

// The same checks, throwing kvq::Error "<where>: <message>" at once.
void require_shape(const std::string& where, const std::vector<int64_t>& expected,
                   const std::vector<int64_t>& found);
template <typename T>
void require_finite(const std::string& where, const std::vector<T>& values) {
  Problems problems;
  check_finite(problems, where, values);
  problems.throw_if_any();
}

}  // namespace kvq::artifact
