// Untrusted images in: decoding (JPEG baseline/progressive, PNG 8/16-bit, BMP, GIF first frame, via
// Debian's libstb-dev stb_image; WebP lossy/lossless/alpha via Debian's libwebp) and the Gemma 3n image
// processor's preprocessing.
//
// Everything is checked before any large allocation: the file size, the format (by its magic
// bytes), and the dimensions read from the header against ImageLimits. A bad file (empty,
// truncated, a lying header, a text file named .jpg, CMYK / 12-bit / arithmetic-coded JPEG, an
// animated WebP) is a g3n::Error naming the file and the problem; nothing crashes.
//
// What the model sees follows transformers' path for a file: load_image (PIL open + EXIF
// orientation) and the image processor's RGB conversion:
//  - JPEG EXIF orientation (tags 2..8) is applied as PIL.ImageOps.exif_transpose does.
//  - Transparency (alpha channel, PNG tRNS, GIF transparent index, WebP alpha) is composited onto
//    opaque white exactly as PIL.Image.alpha_composite (transformers' convert_to_rgb): 8-bit integer
//    rounding.
//  - An animated GIF gives its first frame (PIL's Image.open does too): stb_image's
//    stbi_load_from_memory decodes the first image of the file on the logical screen; later frames
//    are never read. An animated WebP is refused with an error instead.
//  - WebP is decoded by libwebp, the library PIL uses, with the same settings (straight RGBA, fancy
//    chroma upsampling): lossless WebP gives the encoded pixels exactly, lossy WebP PIL's pixels.
//  - Grey is replicated to R, G, B. 16-bit PNGs keep the high byte, except 16-bit grey without
//    alpha, which PIL opens as mode I;16 and converts to RGB by clipping at 255: so does g3n.
//  - JPEG decoding is stb_image's, not libjpeg-turbo's (PIL's): pixels may differ by a few levels.
//
// Preprocessing = transformers' SiglipImageProcessor as Gemma 3n configures it: resize to
// size x size (aspect ratio not kept) with PIL/torchvision's antialiased bilinear filter on 8-bit
// RGB (PIL's fixed-point algorithm), rescale by float32(1/255), no mean/std normalisation, planar
// [3, size, size] float32 in R, G, B order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace g3n::media {

struct ImageLimits {
  uint64_t max_file_bytes = uint64_t(256) << 20;  // 256 MiB
  int64_t max_side = 32768;                        // pixels per side
  int64_t max_pixels = int64_t(100) << 20;         // ~105 Mpixels (a decoded RGBA frame is 4 bytes each)
};

// 8-bit RGB, row-major [height, width, 3].
struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
  std::string format;       // "JPEG", "PNG", "BMP", "GIF", "WebP"
  int source_channels = 0;  // channels in the file (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA)
  int exif_orientation = 1;
};

// Decodes an image held in memory; `name` is used in error messages.
RgbImage decode_image(const uint8_t* data, size_t size, const std::string& name, const ImageLimits& limits = {});
// Reads and decodes a file.
RgbImage load_image(const std::string& path, const ImageLimits& limits = {});

// PIL's Image.resize(BILINEAR) on 8-bit RGB (antialiased: the triangle filter widens by the
// down-scale factor; two passes, horizontal then vertical, 8-bit intermediate, 22-bit fixed point).
RgbImage resize_bilinear(const RgbImage& img, int64_t out_width, int64_t out_height);

// The Gemma 3n image processor: resize to size x size, float32(u8) * float32(1/255), planar [3, size, size].
std::vector<float> preprocess_image(const RgbImage& img, int64_t size);

}  // namespace g3n::media
