#include "media/image.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "base/checked.h"
#include "base/error.h"

// libwebp (Debian libwebp-dev): the decoder of the WebP format's authors, lossy (VP8) and lossless (VP8L).
#include <webp/decode.h>

// stb_image (Debian libstb-dev), compiled here with only the formats we accept and private symbols.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 16)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wtype-limits"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace g3n::media {
namespace {

uint32_t be16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }

// What the JPEG headers say before the entropy-coded data: checked before stb_image sees the file.
struct JpegInfo {
  int components = 0, precision = 8, sof = 0;
  int64_t width = 0, height = 0;
  int orientation = 1;
  bool has_eoi_after_sos = false;  // the file was not cut short
  bool sos_seen = false;
  const char* corrupt = nullptr;   // the first inconsistency found, if any
};

// EXIF orientation (tag 0x0112) from an APP1 "Exif\0\0" payload; 1 when absent or malformed.
int exif_orientation(const uint8_t* p, size_t n) {
  if (n < 6 + 8 || std::memcmp(p, "Exif\0\0", 6) != 0) return 1;
  const uint8_t* t = p + 6;
  const size_t tn = n - 6;
  const bool le = t[0] == 'I' && t[1] == 'I';
  if (!le && !(t[0] == 'M' && t[1] == 'M')) return 1;
  auto u16 = [&](size_t off) -> uint32_t { return le ? (uint32_t(t[off]) | uint32_t(t[off + 1]) << 8) : be16(t + off); };
  auto u32 = [&](size_t off) -> uint32_t {
    return le ? (uint32_t(t[off]) | uint32_t(t[off + 1]) << 8 | uint32_t(t[off + 2]) << 16 | uint32_t(t[off + 3]) << 24)
              : (uint32_t(t[off]) << 24 | uint32_t(t[off + 1]) << 16 | uint32_t(t[off + 2]) << 8 | t[off + 3]);
  };
  if (u16(2) != 42) return 1;
  const size_t ifd = u32(4);
  if (ifd > tn || tn - ifd < 2) return 1;
  const size_t count = u16(ifd);
  for (size_t i = 0; i < count; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e > tn || tn - e < 12) return 1;
    if (u16(e) == 0x0112 && u16(e + 2) == 3 && u32(e + 4) >= 1) {
      const uint32_t v = u16(e + 8);
      return (v >= 1 && v <= 8) ? int(v) : 1;
    }
  }
  return 1;
}

// Walks every marker segment of the file (skipping entropy-coded data), as stb_image will, and
// checks what stb_image 2.27 trusts: a Huffman table (DHT) may define at most 256 codes (more
// overflows its tables), and every DHT / SOF / SOS segment must be internally consistent.
JpegInfo scan_jpeg(const uint8_t* d, size_t n) {
  JpegInfo info;
  size_t pos = 2;
  bool in_scan = false;
  while (pos + 2 <= n) {
    if (in_scan) {
      // Entropy-coded data: FF 00 is a stuffed byte, FF D0..D7 a restart marker, FF FF fill.
      if (d[pos] != 0xFF || d[pos + 1] == 0x00 || (d[pos + 1] >= 0xD0 && d[pos + 1] <= 0xD7) || d[pos + 1] == 0xFF) {
        ++pos;
        continue;
      }
      in_scan = false;
    }
    if (d[pos] != 0xFF) break;
    const uint8_t m = d[pos + 1];
    if (m == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      pos += 2;
      continue;
    }
    if (m == 0xD9) {
      info.has_eoi_after_sos = info.has_eoi_after_sos || info.sos_seen;
      break;
    }
    if (pos + 4 > n) break;
    const size_t len = be16(d + pos + 2);
    if (len < 2 || len > n - pos - 2) break;
    const uint8_t* seg = d + pos + 4;
    const size_t seglen = len - 2;
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
      if (seglen < 6 || seglen != 6 + size_t(seg[5]) * 3) info.corrupt = "bad frame header";
      if (info.sof == 0 && seglen >= 6) {
        info.sof = m;
        info.precision = seg[0];
        info.height = be16(seg + 1);
        info.width = be16(seg + 3);
        info.components = seg[5];
      }
    } else if (m == 0xC4) {
      size_t k = 0;
      while (k < seglen) {
        if (seglen - k < 17) {
          info.corrupt = "bad Huffman table";
          break;
        }
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += seg[k + i];
        if ((seg[k] >> 4) > 1 || (seg[k] & 15) > 3 || codes > 256 || codes > seglen - k - 17) {
          info.corrupt = "bad Huffman table";
          break;
        }
        k += 17 + codes;
      }
    } else if (m == 0xDA) {
      if (seglen < 1 || seglen != 4 + size_t(seg[0]) * 2) info.corrupt = "bad scan header";
      info.sos_seen = true;
      in_scan = true;
    } else if (m == 0xE1 && info.orientation == 1) {
      info.orientation = exif_orientation(seg, seglen);
    }
    pos += 2 + len;
  }
  return info;
}

std::string printable_start(const uint8_t* d, size_t n) {
  std::string s;
  for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
    const char c = char(d[i]);
    if (c >= 32 && c < 127) s += c;
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(d[i]));
      s += buf;
    }
  }
  return s;
}

// Output pixel (ox, oy) of the EXIF-transposed image reads input pixel (sx, sy); PIL.ImageOps.exif_transpose:
// 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90.
RgbImage apply_orientation(RgbImage img, int o) {
  if (o <= 1 || o > 8) return img;
  const int64_t W = img.width, H = img.height;
  const bool swap = o >= 5;
  RgbImage out = img;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  for (int64_t oy = 0; oy < out.height; ++oy)
    for (int64_t ox = 0; ox < out.width; ++ox) {
      int64_t sx = ox, sy = oy;
      switch (o) {
        case 2: sx = W - 1 - ox; break;
        case 3: sx = W - 1 - ox, sy = H - 1 - oy; break;
        case 4: sy = H - 1 - oy; break;
        case 5: sx = oy, sy = ox; break;
        case 6: sx = oy, sy = H - 1 - ox; break;
        case 7: sx = W - 1 - oy, sy = H - 1 - ox; break;
        case 8: sx = W - 1 - oy, sy = ox; break;
      }
      std::memcpy(&out.rgb[size_t((oy * out.width + ox) * 3)], &img.rgb[size_t((sy * W + sx) * 3)], 3);
    }
  return out;
}

// PIL.Image.alpha_composite(white, rgba).convert("RGB"): ImagingAlphaComposite with an opaque white
// destination, 7-bit fixed point and SHIFTFORDIV255 rounding.
uint8_t over_white(uint32_t c, uint32_t a) {
  if (a == 0) return 255;
  const uint32_t coef1 = a * 128, coef2 = (255 - a) * 128;
  const uint32_t t = c * coef1 + 255 * coef2 + (0x80u << 7);
  return uint8_t(((((t >> 8) + t) >> 8)) >> 7);
}

// 8-bit RGBA, straight (not premultiplied) alpha -> RGB over opaque white, as the rest of the file does.
void rgba_over_white(const uint8_t* px, size_t pixels, uint8_t* rgb) {
  for (size_t i = 0; i < pixels; ++i) {
    const uint32_t a = px[4 * i + 3];
    for (size_t c = 0; c < 3; ++c) rgb[3 * i + c] = a == 255 ? px[4 * i + c] : over_white(px[4 * i + c], a);
  }
}

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data: truncated";
  }
  return "unknown error";
}

void check_dimensions(const std::string& name, const std::string& format, int64_t w, int64_t h, const ImageLimits& limits) {
  G3N_CHECK(w > 0 && h > 0, name, ": ", format, " header gives ", w, "x", h, " pixels");
  G3N_CHECK(w <= limits.max_side && h <= limits.max_side &&
                checked_mul(uint64_t(w), uint64_t(h), "image size") <= uint64_t(limits.max_pixels),
            name, ": ", format, " of ", w, "x", h, " pixels is above the limit (", limits.max_side,
            " pixels per side, ", limits.max_pixels, " pixels in all)");
}

// WebP (RIFF "WEBP": VP8 lossy, VP8L lossless, VP8X extended with alpha). The header's features
// (WebPGetFeatures parses only the RIFF / VP8X / frame headers) are checked before anything is
// allocated; libwebp then decodes straight into our buffer. PIL decodes WebP with the same library
// (non-premultiplied RGBA, libwebp's default "fancy" chroma upsampling), so the pixels are PIL's.
// Animated WebP is refused: unlike GIF there is no convention in the reference to fall back on here.
RgbImage decode_webp(const uint8_t* d, size_t n, const std::string& name, const ImageLimits& limits) {
  RgbImage img;
  img.format = "WebP";
  WebPBitstreamFeatures f;
  const VP8StatusCode st = WebPGetFeatures(d, n, &f);
  if (st == VP8_STATUS_NOT_ENOUGH_DATA) fail(name, ": truncated WebP (the file ends inside its headers)");
  if (st != VP8_STATUS_OK) fail(name, ": corrupt WebP header (libwebp: ", webp_status(st), ")");
  G3N_CHECK(!f.has_animation, name, ": animated WebP is not supported (give one frame as a still WebP or PNG)");
  check_dimensions(name, img.format, f.width, f.height, limits);
  img.width = f.width, img.height = f.height;
  img.source_channels = f.has_alpha ? 4 : 3;
  const size_t pixels = size_t(f.width) * size_t(f.height);
  img.rgb.resize(pixels * 3);
  if (!f.has_alpha) {
    if (!WebPDecodeRGBInto(d, n, img.rgb.data(), img.rgb.size(), f.width * 3))
      fail(name, ": cannot decode the WebP: truncated or corrupt image data");
    return img;
  }
  std::vector<uint8_t> rgba(checked_mul(pixels, size_t(4), "image size"));
  if (!WebPDecodeRGBAInto(d, n, rgba.data(), rgba.size(), f.width * 4))
    fail(name, ": cannot decode the WebP: truncated or corrupt image data");
  rgba_over_white(rgba.data(), pixels, img.rgb.data());
  return img;
}

}  // namespace

RgbImage decode_image(const uint8_t* d, size_t n, const std::string& name, const ImageLimits& limits) {
  G3N_CHECK(n > 0, name, ": empty file (0 bytes), not an image");
  G3N_CHECK(n <= limits.max_file_bytes, name, ": ", n, " bytes, above the image file limit of ", limits.max_file_bytes);
  G3N_CHECK(n <= size_t(INT32_MAX), name, ": file too large for the image decoder");
  RgbImage img;
  JpegInfo jpeg;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
    img.format = "JPEG";
    jpeg = scan_jpeg(d, n);
    G3N_CHECK(jpeg.sof != 0, name, ": JPEG without a frame header (truncated or corrupt)");
    G3N_CHECK(jpeg.sof == 0xC0 || jpeg.sof == 0xC1 || jpeg.sof == 0xC2, name, ": JPEG coding (SOF marker 0x", std::hex,
              jpeg.sof, std::dec, ") is not supported: only baseline and progressive Huffman JPEG");
    G3N_CHECK(jpeg.precision == 8, name, ": ", jpeg.precision, "-bit JPEG is not supported (8-bit only)");
    G3N_CHECK(jpeg.components != 4, name, ": CMYK / YCCK (4-component) JPEG is not supported; convert it to RGB");
    G3N_CHECK(jpeg.components == 1 || jpeg.components == 3, name, ": JPEG with ", jpeg.components,
              " components is not supported (grey or colour only)");
    G3N_CHECK(!jpeg.corrupt, name, ": corrupt JPEG (", jpeg.corrupt ? jpeg.corrupt : "", ")");
    G3N_CHECK(jpeg.has_eoi_after_sos, name, ": truncated JPEG (the image data ends before its end-of-image marker)");
  } else if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) {
    img.format = "PNG";
  } else if (n >= 6 && (std::memcmp(d, "GIF87a", 6) == 0 || std::memcmp(d, "GIF89a", 6) == 0)) {
    img.format = "GIF";
  } else if (n >= 2 && d[0] == 'B' && d[1] == 'M') {
    img.format = "BMP";
  } else if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    return decode_webp(d, n, name, limits);
  } else if (n >= 4 && std::memcmp(d, "RIFF", 4) == 0) {
    fail(name, n < 12 ? ": truncated RIFF header (a WebP image starts with RIFF....WEBP)"
                      : ": a RIFF file that is not WebP (audio or video?), not an image");
  } else {
    fail(name, ": not a JPEG, PNG, WebP, BMP or GIF image (the file starts with \"", printable_start(d, n), "\")");
  }

  // The dimensions the header claims, checked against the limits before the decoder allocates anything.
  auto le16 = [&](size_t o) { return int64_t(d[o]) | int64_t(d[o + 1]) << 8; };
  auto le32 = [&](size_t o) { return int64_t(int32_t(uint32_t(le16(o)) | uint32_t(le16(o + 2)) << 16)); };
  int64_t hw = 0, hh = 0;
  if (img.format == "JPEG") {
    hw = jpeg.width, hh = jpeg.height;
  } else if (img.format == "PNG") {
    G3N_CHECK(n >= 24 && std::memcmp(d + 12, "IHDR", 4) == 0, name, ": truncated or corrupt PNG (no IHDR header)");
    hw = int64_t(be16(d + 16)) << 16 | be16(d + 18);
    hh = int64_t(be16(d + 20)) << 16 | be16(d + 22);
  } else if (img.format == "GIF") {
    G3N_CHECK(n >= 10, name, ": truncated GIF header");
    hw = le16(6), hh = le16(8);
  } else {
    G3N_CHECK(n >= 26, name, ": truncated BMP header");
    if (le32(14) == 12) {
      hw = le16(18), hh = le16(20);
    } else {
      G3N_CHECK(n >= 30, name, ": truncated BMP header");
      hw = le32(18), hh = std::abs(le32(22));
    }
  }
  check_dimensions(name, img.format, hw, hh, limits);

  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(d, int(n), &w, &h, &comp))
    fail(name, ": cannot read the ", img.format, " header (", stbi_failure_reason(), ")");
  G3N_CHECK(w > 0 && h > 0 && w <= limits.max_side && h <= limits.max_side &&
                checked_mul(uint64_t(w), uint64_t(h), "image size") <= uint64_t(limits.max_pixels),
            name, ": ", img.format, " of ", w, "x", h, " pixels is empty or above the limit");
  if (img.format == "BMP" && n >= 34) {
    // Uncompressed BMP: the pixel array must fit in the file (stb_image would read zeros past the end).
    const auto u32le = [&](size_t o) { return uint32_t(d[o]) | uint32_t(d[o + 1]) << 8 | uint32_t(d[o + 2]) << 16 | uint32_t(d[o + 3]) << 24; };
    const uint32_t offset = u32le(10), header = u32le(14);
    if (header >= 40) {
      const uint32_t bpp = uint32_t(d[28]) | uint32_t(d[29]) << 8, compression = u32le(30);
      if (compression == 0 || compression == 3) {
        const uint64_t row = (uint64_t(bpp) * uint64_t(w) + 31) / 32 * 4;
        G3N_CHECK(uint64_t(offset) + row * uint64_t(h) <= n, name, ": truncated BMP (", n, " bytes, its ", w, "x",
                  h, " pixels need ", uint64_t(offset) + row * uint64_t(h), ")");
      }
    }
  }
  img.source_channels = comp;
  img.width = w, img.height = h;
  img.rgb.resize(size_t(w) * size_t(h) * 3);

  const bool grey16 = img.format == "PNG" && comp == 1 && stbi_is_16_bit_from_memory(d, int(n));
  int dw = 0, dh = 0, dc = 0;
  if (grey16) {
    // PIL opens it as mode I;16 and converts to RGB by clipping each value at 255.
    stbi_us* px = stbi_load_16_from_memory(d, int(n), &dw, &dh, &dc, 1);
    if (!px) fail(name, ": cannot decode the PNG: truncated or corrupt image data (stb_image: ", stbi_failure_reason(), ")");
    for (size_t i = 0; i < size_t(w) * size_t(h); ++i) {
      const uint8_t v = uint8_t(std::min<unsigned>(px[i], 255));
      img.rgb[3 * i] = img.rgb[3 * i + 1] = img.rgb[3 * i + 2] = v;
    }
    stbi_image_free(px);
  } else {
    stbi_uc* px = stbi_load_from_memory(d, int(n), &dw, &dh, &dc, 4);
    if (!px) fail(name, ": cannot decode the ", img.format, ": truncated or corrupt image data (stb_image: ", stbi_failure_reason(), ")");
    if (dw != w || dh != h) {
      stbi_image_free(px);
      fail(name, ": ", img.format, " decoded to ", dw, "x", dh, " pixels, its header says ", w, "x", h);
    }
    rgba_over_white(px, size_t(w) * size_t(h), img.rgb.data());
    stbi_image_free(px);
  }
  if (img.format == "JPEG" && jpeg.orientation != 1) {
    img.exif_orientation = jpeg.orientation;
    img = apply_orientation(std::move(img), jpeg.orientation);
  }
  return img;
}

RgbImage load_image(const std::string& path, const ImageLimits& limits) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cannot open image file ", path);
  const std::streamoff size = in.tellg();
  G3N_CHECK(size >= 0, "cannot read image file ", path);
  G3N_CHECK(uint64_t(size) <= limits.max_file_bytes, path, ": ", size, " bytes, above the image file limit of ",
            limits.max_file_bytes);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size)) fail("cannot read image file ", path);
  return decode_image(bytes.data(), bytes.size(), path, limits);
}

// ------------------------------------------------------------------------------------------------
// Resize: Pillow's ImagingResample (libImaging/Resample.c) with the bilinear filter, 8 bits per channel.
// ------------------------------------------------------------------------------------------------

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs {
  int64_t ksize = 0;
  std::vector<int64_t> xmin, xcount;  // per output pixel
  std::vector<int64_t> k;             // [out, ksize] fixed-point weights
};

// precompute_coeffs + normalize_coeffs_8bpc for the triangle filter (support 1).
Coeffs precompute(int64_t in_size, int64_t out_size) {
  const double support_base = 1.0;
  double scale = double(in_size) / double(out_size);
  double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = support_base * filterscale;
  Coeffs c;
  c.ksize = int64_t(std::ceil(support)) * 2 + 1;
  c.xmin.resize(size_t(out_size));
  c.xcount.resize(size_t(out_size));
  c.k.assign(size_t(out_size * c.ksize), 0);
  std::vector<double> kk(size_t(c.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (double(xx) + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int64_t xmin = int64_t(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int64_t x = 0; x < xmax; ++x) {
      double t = (double(x + xmin) - center + 0.5) * ss;
      if (t < 0) t = -t;
      const double wv = t < 1.0 ? 1.0 - t : 0.0;
      kk[size_t(x)] = wv;
      ww += wv;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? kk[size_t(x)] / ww : kk[size_t(x)];
      c.k[size_t(xx * c.ksize + x)] =
          v < 0 ? int64_t(-0.5 + v * double(1 << kPrecisionBits)) : int64_t(0.5 + v * double(1 << kPrecisionBits));
    }
    c.xmin[size_t(xx)] = xmin;
    c.xcount[size_t(xx)] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t ss) {
  const int64_t v = ss >> kPrecisionBits;
  return uint8_t(std::clamp<int64_t>(v, 0, 255));
}

}  // namespace

RgbImage resize_bilinear(const RgbImage& img, int64_t out_w, int64_t out_h) {
  G3N_CHECK(out_w > 0 && out_h > 0 && out_w <= 65536 && out_h <= 65536, "resize to ", out_w, "x", out_h, " pixels");
  G3N_CHECK(img.width > 0 && img.height > 0 && img.rgb.size() == size_t(img.width * img.height * 3),
            "resize: empty or inconsistent image");
  RgbImage cur = img;
  if (out_w != cur.width) {  // horizontal pass
    const Coeffs c = precompute(cur.width, out_w);
    RgbImage t = cur;
    t.width = out_w;
    t.rgb.assign(size_t(out_w * cur.height * 3), 0);
    for (int64_t y = 0; y < cur.height; ++y)
      for (int64_t xx = 0; xx < out_w; ++xx) {
        const int64_t* k = &c.k[size_t(xx * c.ksize)];
        const uint8_t* row = &cur.rgb[size_t((y * cur.width + c.xmin[size_t(xx)]) * 3)];
        for (int ch = 0; ch < 3; ++ch) {
          int64_t ss = int64_t(1) << (kPrecisionBits - 1);
          for (int64_t x = 0; x < c.xcount[size_t(xx)]; ++x) ss += int64_t(row[x * 3 + ch]) * k[x];
          t.rgb[size_t((y * out_w + xx) * 3 + ch)] = clip8(ss);
        }
      }
    cur = std::move(t);
  }
  if (out_h != cur.height) {  // vertical pass
    const Coeffs c = precompute(cur.height, out_h);
    RgbImage t = cur;
    t.height = out_h;
    t.rgb.assign(size_t(cur.width * out_h * 3), 0);
    for (int64_t yy = 0; yy < out_h; ++yy) {
      const int64_t* k = &c.k[size_t(yy * c.ksize)];
      for (int64_t x = 0; x < cur.width; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          int64_t ss = int64_t(1) << (kPrecisionBits - 1);
          for (int64_t y = 0; y < c.xcount[size_t(yy)]; ++y)
            ss += int64_t(cur.rgb[size_t(((y + c.xmin[size_t(yy)]) * cur.width + x) * 3 + ch)]) * k[y];
          t.rgb[size_t((yy * cur.width + x) * 3 + ch)] = clip8(ss);
        }
    }
    cur = std::move(t);
  }
  return cur;
}

std::vector<float> preprocess_image(const RgbImage& img, int64_t size) {
  G3N_CHECK(size > 0 && size <= 4096, "image size ", size, " (1..4096)");
  const RgbImage r = resize_bilinear(img, size, size);
  const float scale = 1.0f / 255.0f;  // rescale_factor, as float32
  std::vector<float> out(size_t(3 * size * size));
  for (int64_t p = 0; p < size * size; ++p)
    for (int64_t c = 0; c < 3; ++c) out[size_t(c * size * size + p)] = float(r.rgb[size_t(p * 3 + c)]) * scale;
  return out;
}

}  // namespace g3n::media
