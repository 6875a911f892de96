#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace dsv2 {
namespace {

TEST(Dtype, Bf16KnownValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.5f), 0xc020);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  // Ties round to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1.0p-8f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1.0p-7f + 0x1.0p-8f), 0x3f82);
}

TEST(Dtype, F16KnownValues) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                  // rounds to infinity
  EXPECT_EQ(f32_to_f16(0x1.0p-24f), 0x0001);                // smallest subnormal
  EXPECT_EQ(f32_to_f16(0x1.0p-25f), 0x0000);                // tie to even: zero
  EXPECT_EQ(f16_to_f32(0x0001), 0x1.0p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 0x1.ff8p-15f);              // largest subnormal
  EXPECT_EQ(f16_to_f32(0x7c00), INFINITY);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST(Dtype, EveryF16AndBf16ValueRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (!std::isnan(f)) {
      EXPECT_EQ(f32_to_f16(f), h);
    }
    float b = bf16_to_f32(uint16_t(h));
    if (!std::isnan(b)) {
      EXPECT_EQ(f32_to_bf16(b), h);
    }
  }
}

TEST(Dtype, RoundingIsToNearest) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1000.0f, 1000.0f);
  for (int i = 0; i < 10000; ++i) {
    float x = u(rng) * std::pow(2.0f, float(int(rng() % 20) - 10));
    float r16 = f16_to_f32(f32_to_f16(x));
    float rb = bf16_to_f32(f32_to_bf16(x));
    if (std::fabs(x) < 65504.0f) {
      EXPECT_LE(std::fabs(r16 - x), std::fabs(x) * 0x1.0p-11f + 0x1.0p-25f) << x;
    } else {
      EXPECT_TRUE(std::isinf(r16)) << x;
    }
    EXPECT_LE(std::fabs(rb - x), std::fabs(x) * 0x1.0p-8f) << x;
  }
}

TEST(Dtype, ParseName) {
  EXPECT_EQ(parse_dtype_name("bf16", "x"), DType::BF16);
  EXPECT_EQ(parse_dtype_name("f32", "x"), DType::F32);
  EXPECT_THROW(parse_dtype_name("fp8", "--dtype"), Error);
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 7, 64, 1000}) {
      for (int64_t grain : {1, 4, 16}) {
        std::vector<int> hits(size_t(n), 0);
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          EXPECT_EQ(b % grain, 0);
          for (int64_t i = b; i < e; ++i) ++hits[size_t(i)];
        });
        for (int h : hits) ASSERT_EQ(h, 1);
      }
    }
  }
}

// Parts claimed in turn: each part runs exactly once whatever the thread and part counts (more parts
// than threads, fewer, none), and an exception reaches the caller.
TEST(ThreadPool, ForEachPartRunsEveryPartOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t parts : {0, 1, 2, 7, 40}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(parts));
      pool.for_each_part(parts, [&](int64_t p) { hits[size_t(p)].fetch_add(1); });
      for (const auto& h : hits) ASSERT_EQ(h.load(), 1) << threads << " threads, " << parts << " parts";
    }
    EXPECT_THROW(pool.for_each_part(9, [](int64_t p) {
      if (p == 4) throw Error("boom");
    }), Error);
  }
}

TEST(ThreadPool, RethrowsAnException) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, 1, [](int64_t b, int64_t) {
    if (b > 0) throw Error("boom");
  }), Error);
  int64_t sum = 0;  // still usable afterwards
  std::mutex m;
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) {
    std::lock_guard<std::mutex> l(m);
    sum += e - b;
  });
  EXPECT_EQ(sum, 10);
}

}  // namespace
}  // namespace dsv2
