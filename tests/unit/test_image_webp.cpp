// WebP decoding (lossless exact, lossy = libwebp's own pixels, alpha composited on white exactly as the
// PNG path does), bad WebP files, and the first frame of an animated GIF. WebP files are made here with
// libwebp's encoder; the GIF is written byte by byte.
#include <gtest/gtest.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "media/image.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace g3n::media {
namespace {

using Bytes = std::vector<uint8_t>;

std::vector<uint8_t> pattern(int w, int h, int comp) {
  std::vector<uint8_t> v(size_t(w * h * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c) v[size_t((y * w + x) * comp + c)] = uint8_t((x * 7 + y * 13 + c * 50) % 256);
  return v;
}

// RGBA with every alpha value, including 0 and 255.
std::vector<uint8_t> pattern_alpha(int w, int h) {
  std::vector<uint8_t> v = pattern(w, h, 4);
  for (size_t i = 0; i < size_t(w * h); ++i) v[4 * i + 3] = uint8_t((i * 37) % 256);
  return v;
}

// Encoder output (WebPEncode* returns a malloc'd buffer).
Bytes take(uint8_t* out, size_t n) {
  EXPECT_GT(n, 0u);
  Bytes b(out, out + n);
  WebPFree(out);
  return b;
}

Bytes webp_lossless_rgb(int w, int h, const std::vector<uint8_t>& px) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeLosslessRGB(px.data(), w, h, w * 3, &out);
  return take(out, n);
}
Bytes webp_lossless_rgba(int w, int h, const std::vector<uint8_t>& px) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeLosslessRGBA(px.data(), w, h, w * 4, &out);
  return take(out, n);
}
Bytes webp_lossy_rgb(int w, int h, const std::vector<uint8_t>& px) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeRGB(px.data(), w, h, w * 3, 90.0f, &out);
  return take(out, n);
}
Bytes webp_lossy_rgba(int w, int h, const std::vector<uint8_t>& px) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeRGBA(px.data(), w, h, w * 4, 90.0f, &out);
  return take(out, n);
}

void append(void* ctx, void* data, int size) {
  auto* out = static_cast<Bytes*>(ctx);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

// The same RGBA pixels through the PNG path: the reference for WebP's alpha compositing.
RgbImage via_png(int w, int h, const std::vector<uint8_t>& rgba) {
  Bytes b;
  EXPECT_TRUE(stbi_write_png_to_func(append, &b, w, h, 4, rgba.data(), w * 4));
  return decode_image(b.data(), b.size(), "ref.png");
}

std::string error_of(const Bytes& b, const ImageLimits& limits = {}) {
  try {
    decode_image(b.data(), b.size(), "test.webp", limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(WebP, LosslessRgbIsExact) {
  const int w = 37, h = 23;
  const auto px = pattern(w, h, 3);
  const Bytes b = webp_lossless_rgb(w, h, px);
  const RgbImage img = decode_image(b.data(), b.size(), "a.webp");
  EXPECT_EQ(img.format, "WebP");
  EXPECT_EQ(img.width, w);
  EXPECT_EQ(img.height, h);
  EXPECT_EQ(img.source_channels, 3);
  EXPECT_EQ(img.rgb, px);
}

TEST(WebP, LosslessAlphaIsCompositedOnWhiteAsPng) {
  const int w = 31, h = 17;
  const auto px = pattern_alpha(w, h);
  const Bytes b = webp_lossless_rgba(w, h, px);
  const RgbImage img = decode_image(b.data(), b.size(), "a.webp");
  EXPECT_EQ(img.source_channels, 4);
  const RgbImage ref = via_png(w, h, px);
  EXPECT_EQ(img.rgb, ref.rgb);
  // Alpha 0 is white whatever the colour (the lossless encoder may change colours under alpha 0).
  for (size_t i = 0; i < size_t(w * h); ++i) {
    if (px[4 * i + 3] != 0) continue;
    for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb[3 * i + size_t(c)], 255);
  }
}

TEST(WebP, LossyIsLibwebpsDecode) {
  const int w = 64, h = 48;
  std::vector<uint8_t> px(size_t(w * h * 3));  // smooth: what lossy coding keeps well
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) px[size_t((y * w + x) * 3 + c)] = uint8_t(20 + x * 3 + y * (c + 1) + c * 30);
  const Bytes b = webp_lossy_rgb(w, h, px);
  const RgbImage img = decode_image(b.data(), b.size(), "a.webp");
  EXPECT_EQ(img.format, "WebP");
  EXPECT_EQ(img.source_channels, 3);
  int dw = 0, dh = 0;
  uint8_t* ref = WebPDecodeRGB(b.data(), b.size(), &dw, &dh);
  ASSERT_NE(ref, nullptr);
  ASSERT_EQ(dw, w);
  ASSERT_EQ(dh, h);
  EXPECT_EQ(img.rgb, Bytes(ref, ref + size_t(w * h * 3)));
  WebPFree(ref);
  double mean = 0;
  for (size_t i = 0; i < px.size(); ++i) mean += std::fabs(double(img.rgb[i]) - px[i]);
  EXPECT_LT(mean / double(px.size()), 12.0);  // lossy, but the same picture
}

TEST(WebP, LossyWithAlpha) {
  const int w = 40, h = 30;
  const auto px = pattern_alpha(w, h);
  const Bytes b = webp_lossy_rgba(w, h, px);
  const RgbImage img = decode_image(b.data(), b.size(), "a.webp");
  EXPECT_EQ(img.source_channels, 4);
  int dw = 0, dh = 0;
  uint8_t* rgba = WebPDecodeRGBA(b.data(), b.size(), &dw, &dh);
  ASSERT_NE(rgba, nullptr);
  const RgbImage ref = via_png(w, h, Bytes(rgba, rgba + size_t(w * h * 4)));
  WebPFree(rgba);
  EXPECT_EQ(img.rgb, ref.rgb);
}

TEST(WebP, OnePixel) {
  const std::vector<uint8_t> px = {10, 20, 30};
  const Bytes b = webp_lossless_rgb(1, 1, px);
  const RgbImage img = decode_image(b.data(), b.size(), "a.webp");
  EXPECT_EQ(img.rgb, px);
}

TEST(WebP, BadFilesAreErrors) {
  const int w = 40, h = 30;
  const Bytes lossless = webp_lossless_rgb(w, h, pattern(w, h, 3));
  const Bytes lossy = webp_lossy_rgb(w, h, pattern(w, h, 3));
  const Bytes alpha = webp_lossy_rgba(w, h, pattern_alpha(w, h));
  // Every cut: a clean error naming the file, never a crash (and never an image: the data is needed).
  for (const Bytes* f : {&lossless, &lossy, &alpha})
    for (size_t cut = 1; cut < f->size(); cut += (cut < 64 ? 1 : 17)) {
      const std::string e = error_of(Bytes(f->begin(), f->begin() + long(cut)));
      EXPECT_NE(e, "") << "cut at " << cut << " of " << f->size();
      EXPECT_NE(e.find("test.webp"), std::string::npos) << e;
    }
  EXPECT_NE(error_of(Bytes(lossless.begin(), lossless.begin() + 20)).find("truncated"), std::string::npos)
      << error_of(Bytes(lossless.begin(), lossless.begin() + 20));
  EXPECT_NE(error_of(Bytes(lossy.begin(), lossy.end() - 40)).find("WebP"), std::string::npos);

  // Corrupt image data after a valid header.
  Bytes garbled = lossless;
  for (size_t i = 30; i < garbled.size(); ++i) garbled[i] = uint8_t(garbled[i] * 31 + 7);
  try {
    decode_image(garbled.data(), garbled.size(), "test.webp");  // an error or some picture, never a crash
  } catch (const Error&) {
  }

  // A VP8L header claiming 16384 x 16384 pixels: refused before decoding.
  Bytes huge = lossless;
  ASSERT_EQ(std::memcmp(&huge[12], "VP8L", 4), 0);
  const uint32_t bits = 16383u | 16383u << 14 | uint32_t(huge[21 + 3] >> 4 & 1) << 28;
  for (int i = 0; i < 4; ++i) huge[size_t(21 + i)] = uint8_t(bits >> (8 * i));
  EXPECT_NE(error_of(huge).find("above the limit"), std::string::npos) << error_of(huge);
  ImageLimits small;
  small.max_pixels = 100;
  EXPECT_NE(error_of(lossless, small).find("above the limit"), std::string::npos);
  small = {};
  small.max_side = 39;
  EXPECT_NE(error_of(lossy, small).find("above the limit"), std::string::npos);

  // Other RIFF files and short headers.
  const Bytes wav = {'R', 'I', 'F', 'F', 0x24, 0, 0, 0, 'W', 'A', 'V', 'E', 'f', 'm', 't', ' '};
  EXPECT_NE(error_of(wav).find("not WebP"), std::string::npos) << error_of(wav);
  EXPECT_NE(error_of(Bytes({'R', 'I', 'F', 'F', 1, 0})).find("truncated"), std::string::npos);
}

// An extended-format (VP8X) file with the animation flag: refused by name.
TEST(WebP, AnimatedIsRefused) {
  Bytes b = {'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P',
             'V', 'P', '8', 'X', 10, 0, 0, 0, 0x02, 0, 0, 0, 15, 0, 0, 9, 0, 0,  // animation, 16 x 10 canvas
             'A', 'N', 'I', 'M', 6, 0, 0, 0, 255, 255, 255, 255, 0, 0};           // background, loop forever
  const uint32_t riff = uint32_t(b.size() - 8);
  for (int i = 0; i < 4; ++i) b[size_t(4 + i)] = uint8_t(riff >> (8 * i));
  const std::string e = error_of(b);
  EXPECT_NE(e.find("animated WebP"), std::string::npos) << e;
}

// A 2 x 2 GIF89a with a 4-colour global table and two frames (red, then green), LZW-coded with a clear
// code before every pixel so that codes stay 3 bits wide.
Bytes two_frame_gif() {
  Bytes g = {'G', 'I', 'F', '8', '9', 'a', 2, 0, 2, 0, 0x81, 0, 0,
             255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255};
  const uint8_t netscape[] = {0x21, 0xFF, 11, 'N', 'E', 'T', 'S', 'C', 'A', 'P', 'E', '2', '.', '0',
                              3, 1, 0, 0, 0};
  g.insert(g.end(), netscape, netscape + sizeof netscape);
  for (int index : {0, 1}) {
    const uint8_t gce[] = {0x21, 0xF9, 4, 0, 10, 0, 0, 0};  // 0.1 s per frame
    g.insert(g.end(), gce, gce + sizeof gce);
    const uint8_t desc[] = {0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0};
    g.insert(g.end(), desc, desc + sizeof desc);
    std::vector<int> codes;
    for (int p = 0; p < 4; ++p) codes.insert(codes.end(), {4, index});  // clear, pixel
    codes.push_back(5);                                                 // end of information
    Bytes data;
    uint32_t acc = 0;
    int nbits = 0;
    for (int c : codes) {
      acc |= uint32_t(c) << nbits;
      nbits += 3;
      while (nbits >= 8) data.push_back(uint8_t(acc & 0xFF)), acc >>= 8, nbits -= 8;
    }
    if (nbits > 0) data.push_back(uint8_t(acc & 0xFF));
    g.push_back(2);  // LZW minimum code size
    g.push_back(uint8_t(data.size()));
    g.insert(g.end(), data.begin(), data.end());
    g.push_back(0);
  }
  g.push_back(0x3B);
  return g;
}

TEST(Gif, AnimatedGifGivesItsFirstFrame) {
  const Bytes g = two_frame_gif();
  const RgbImage img = decode_image(g.data(), g.size(), "anim.gif");
  EXPECT_EQ(img.format, "GIF");
  ASSERT_EQ(img.width, 2);
  ASSERT_EQ(img.height, 2);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(img.rgb[3 * i], 255) << i;  // red: the first frame, not the green second one
    EXPECT_EQ(img.rgb[3 * i + 1], 0) << i;
    EXPECT_EQ(img.rgb[3 * i + 2], 0) << i;
  }
}

}  // namespace
}  // namespace g3n::media
