/*
 * Force-included (`-include`) into every mlx-c translation unit and into bindgen's parse.
 * It papers over two gaps between mlx-c 0.7.0 (written for Apple clang) and Linux toolchains,
 * so that no user of mlx-rs ever sees them.
 */
#ifndef MLX_SYS_COMPAT_H
#define MLX_SYS_COMPAT_H

/*
 * 1. Half-precision types. mlx-c's `half.h` declares `float16_t` / `bfloat16_t` (and with them
 *    the `mlx_array_{item,data}_{float16,bfloat16}` functions) only on ARM, while mlx-rs calls
 *    those functions on every target. Elsewhere we declare 16-bit storage types with the same
 *    size and alignment as MLX's own `float16_t` / `bfloat16_t`, and keep `half.h` out.
 *    bindgen is told to emit `float16_t` as a `u16` newtype (mlx-rs reads `.0`), and
 *    `bfloat16_t` stays a plain `u16`, exactly like the bindings generated on macOS.
 */
#if !(defined(__ARM_FEATURE_FP16_SCALAR_ARITHMETIC) || defined(__aarch64__))
#define MLX_HALF_H
#define HAS_FLOAT16
#define HAS_BFLOAT16
#include <stdint.h>
typedef struct mlx_sys_float16 {
  uint16_t bits;
} float16_t;
typedef uint16_t bfloat16_t;
#endif

/*
 * 2. `std::format`. mlx-c's `private/io.h` formats five error messages with `std::format`,
 *    which libstdc++ only ships from GCC 13 on (Debian 12 has GCC 12). Where the library lacks
 *    it, a minimal replacement that substitutes each `{}` in order is enough for those calls.
 */
#if defined(__cplusplus)
#include <version>
#if !defined(__cpp_lib_format)
#include <sstream>
#include <string>
#include <string_view>

namespace mlx_sys_compat {
inline void format_into(std::ostringstream& out, std::string_view fmt) {
  out << fmt;
}

template <typename T, typename... Rest>
void format_into(
    std::ostringstream& out,
    std::string_view fmt,
    const T& first,
    const Rest&... rest) {
  auto at = fmt.find("{}");
  if (at == std::string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, at) << first;
  format_into(out, fmt.substr(at + 2), rest...);
}
} // namespace mlx_sys_compat

namespace std {
template <typename... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  mlx_sys_compat::format_into(out, fmt, args...);
  return out.str();
}
} // namespace std
#endif
#endif

#endif
