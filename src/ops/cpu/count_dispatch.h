// Run-time counts onto kernels templated on them (tokens per GEMV call, query rows per attention call).
#pragma once
#include <cstdint>
#include <type_traits>

namespace dsv2::cpu {

// Calls f(std::integral_constant<int, c>{}) with c = min(n, N), for n >= 1: kernels instantiated for
// every count 1..N.
template <int N, typename F>
inline void with_count(int64_t n, F&& f) {
  if constexpr (N == 1) {
    f(std::integral_constant<int, 1>{});
  } else if (n >= N) {
    f(std::integral_constant<int, N>{});
  } else {
    with_count<N - 1>(n, f);
  }
}

}  // namespace dsv2::cpu
