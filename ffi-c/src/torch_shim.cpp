// The one piece of gmlake in C++: PyTorch's pluggable allocator does not check the pointer its
// allocation function returns, so running out of memory must be reported by throwing a C++
// exception. Rust calls this through an `extern "C-unwind"` declaration, which lets the exception
// unwind through the Rust frame into PyTorch, which turns it into a Python RuntimeError.
#include <stdexcept>

extern "C" [[noreturn]] void gmlake_throw(const char* message) {
  throw std::runtime_error(message);
}
