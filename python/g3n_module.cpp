// The Python module `g3n`: a thin pybind11 layer over the C++ engine (include/g3n/engine.h, runtime/generator.h,
// runtime/transcribe.h, tokenizer/). It turns Python values (str, bytes, paths, NumPy arrays, OpenAI-style message
// dicts) into the engine's requests and the results back into Python values; the model logic is all in C++, shared
// with the CLI and the server.
//
// Threads and the GIL: every call that computes (load, encode media, prefill, decode, score) releases the GIL.
// One Model owns one Session (its KV cache: a conversation that grows turn by turn prefills only the new turn)
// and the engine's thread pool, so the compute of one Model is serialised by a mutex: calls on one Model from
// several Python threads run one after the other (the mutex is only ever taken without the GIL held).
//
// Streaming (chat/generate with stream=True) runs generate() on a worker thread: the request is prepared first in
// the calling thread (tokenised, media encoded: bad input raises at the call, not at the first next()), then the
// worker decodes and its on_text callback pushes each piece into a queue; the iterator's __next__ pops pieces as
// they come (waiting without the GIL). Dropping the iterator, or close(), cancels the generation (the callback
// returns false) and joins the worker.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "g3n/engine.h"
#include "media/audio_split.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "runtime/transcribe.h"
#include "server/json_guard.h"  // base64_decode (header-only), so data: URIs decode as the server decodes them
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace py = pybind11;

namespace g3n::python {
namespace {

constexpr int64_t kSampleRate = 16000;  // what encode_audio_samples expects (Gemma 3n's feature extractor)

// ---------------------------------------------------------------------------------------------------------------
// The engine behind one Python Model
// ---------------------------------------------------------------------------------------------------------------

struct Engine {
  std::string path;
  std::unique_ptr<Model> model;
  const Tokenizer* tokenizer = nullptr;
  SamplingParams defaults;  // the checkpoint's generation_config.json
  std::mutex mu;            // guards everything below and every use of the model's thread pool
  std::unique_ptr<Session> session;
  GenerateResult last;
};

// Python str from engine text. The generator hands out whole UTF-8 characters; "replace" keeps a stray byte from
// turning a finished answer into an exception.
py::str to_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), Py_ssize_t(s.size()), "replace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

std::string type_name(py::handle o) { return py::str(py::type::handle_of(o).attr("__name__")); }

// ---------------------------------------------------------------------------------------------------------------
// Media: Python values -> sources (with the GIL), sources -> soft tokens (without it)
// ---------------------------------------------------------------------------------------------------------------

struct MediaSource {
  MediaEmbedding::Kind kind = MediaEmbedding::Kind::Image;
  enum From { Path, Bytes, Rgb, Samples } from = Path;
  std::string name;            // the path, or what error messages call it
  std::string bytes;           // Bytes
  std::vector<uint8_t> rgb;    // Rgb: [height, width, 3]
  int64_t width = 0, height = 0;
  std::vector<float> samples;  // Samples: mono, 16 kHz
};

bool is_pathlike(py::handle o) { return py::isinstance<py::str>(o) || py::hasattr(o, "__fspath__"); }
bool is_bytes(py::handle o) { return py::isinstance<py::bytes>(o) || py::isinstance<py::bytearray>(o) || py::isinstance<py::memoryview>(o); }

std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(a.shape(i));
  }
  s += a.ndim() == 1 ? ",)" : ")";
  return s;
}

// A string in a message part or a media argument: a data: URI (decoded here) or a local file path.
void from_string(MediaSource& s, const std::string& text, const std::string& where) {
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string::npos || comma < 12 || text.compare(comma - 7, 7, ";base64") != 0)
      fail(where, ": expected a base64 data URI (data:<type>;base64,...)");
    auto decoded = server::base64_decode(std::string_view(text).substr(comma + 1));
    if (!decoded || decoded->empty()) fail(where, ": the data URI is not valid base64 (or holds no data)");
    s.from = MediaSource::Bytes;
    s.bytes = std::move(*decoded);
    s.name = where;
    return;
  }
  if (text.rfind("http://", 0) == 0 || text.rfind("https://", 0) == 0)
    fail(where, ": remote URLs are not fetched; give a file path, bytes, a data: URI or a NumPy array");
  s.from = MediaSource::Path;
  s.name = text.rfind("file://", 0) == 0 ? text.substr(7) : text;
}

MediaSource media_source(py::handle o, MediaEmbedding::Kind kind, const std::string& where) {
  MediaSource s;
  s.kind = kind;
  s.name = where;
  const bool image = kind == MediaEmbedding::Kind::Image;
  if (is_pathlike(o)) {
    from_string(s, py::str(py::module_::import("os").attr("fspath")(o)), where);
  } else if (is_bytes(o)) {
    s.from = MediaSource::Bytes;
    s.bytes = py::bytes(py::module_::import("builtins").attr("bytes")(o));
    if (s.bytes.empty()) fail(where, ": empty bytes");
  } else if (py::isinstance<py::array>(o)) {
    auto a = py::reinterpret_borrow<py::array>(o);
    if (image) {
      if (!py::isinstance<py::array_t<uint8_t>>(o) || a.ndim() != 3 || a.shape(2) != 3)
        fail(where, ": an image array must be uint8 [height, width, 3] (RGB), got ", std::string(py::str(a.dtype())),
             " of shape ", shape_text(a));
      auto c = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(o);
      s.from = MediaSource::Rgb;
      s.height = c.shape(0);
      s.width = c.shape(1);
      s.rgb.assign(c.data(), c.data() + c.size());
    } else {
      if (a.dtype().kind() != 'f' || a.ndim() != 1)
        fail(where, ": an audio array must be a mono float32 waveform [samples] at 16 kHz, got ",
             std::string(py::str(a.dtype())), " of shape ", shape_text(a));
      auto c = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(o);
      s.from = MediaSource::Samples;
      s.samples.assign(c.data(), c.data() + c.size());
    }
  } else {
    fail(where, ": expected ", image ? "an image" : "audio", " as a file path, bytes, a data: URI or a NumPy array (",
         image ? "uint8 [height, width, 3]" : "float32 [samples] at 16 kHz", "), got ", type_name(o));
  }
  return s;
}

// images= / audio= arguments: None, one item, or a list of items.
std::vector<MediaSource> media_list(py::handle o, MediaEmbedding::Kind kind, const char* arg) {
  std::vector<MediaSource> out;
  if (o.is_none()) return out;
  if (is_pathlike(o) || is_bytes(o) || py::isinstance<py::array>(o)) {
    out.push_back(media_source(o, kind, arg));
    return out;
  }
  if (!py::isinstance<py::sequence>(o)) fail(arg, ": expected a list, got ", type_name(o));
  size_t i = 0;
  for (py::handle item : o) out.push_back(media_source(item, kind, std::string(arg) + "[" + std::to_string(i++) + "]"));
  return out;
}

// The images, then the audio clips, in the order they fill the prompt's placeholders.
std::vector<MediaSource> media_sources(py::handle images, py::handle audio) {
  std::vector<MediaSource> out = media_list(images, MediaEmbedding::Kind::Image, "images");
  for (auto& a : media_list(audio, MediaEmbedding::Kind::Audio, "audio")) out.push_back(std::move(a));
  return out;
}

// The soft tokens of one source; a recording longer than 30 s becomes several clips cut at quiet points, as
// `g3n run --audio` does. Call without the GIL, holding Engine::mu.
std::vector<MediaEmbedding> encode(const Model& model, const MediaSource& s, int64_t image_size,
                                   double max_audio_seconds) {
  std::vector<MediaEmbedding> out;
  // The resolutions Gemma 3n's image processor offers (the CLI's --image-size choices).
  if (image_size != 256 && image_size != 512 && image_size != 768)
    fail("image_size must be 256, 512 or 768, got ", image_size);
  if (!(max_audio_seconds > 0 && max_audio_seconds <= 86400))
    fail("max_audio_seconds must be in (0, 86400], got ", max_audio_seconds);
  if (s.kind == MediaEmbedding::Kind::Image) {
    switch (s.from) {
      case MediaSource::Path: out.push_back(model.encode_image_file(s.name, image_size)); break;
      case MediaSource::Bytes: out.push_back(model.encode_image(s.bytes.data(), s.bytes.size(), s.name, image_size)); break;
      case MediaSource::Rgb: out.push_back(model.encode_rgb(s.rgb.data(), s.width, s.height, s.name, image_size)); break;
      case MediaSource::Samples: break;
    }
    return out;
  }
  switch (s.from) {
    case MediaSource::Path: return model.encode_audio_file_windows(s.name, max_audio_seconds);
    case MediaSource::Bytes: return model.encode_audio_windows(s.bytes.data(), s.bytes.size(), s.name, max_audio_seconds);
    case MediaSource::Rgb: break;
    case MediaSource::Samples: {
      const auto n = int64_t(s.samples.size());
      if (double(n) > max_audio_seconds * double(kSampleRate))
        fail(s.name, ": ", double(n) / double(kSampleRate), " s of audio is longer than the limit of ",
             max_audio_seconds, " s (max_audio_seconds)");
      const auto windows = media::split_long_audio(s.samples.data(), n, kSampleRate);
      for (const auto& w : windows) {
        std::string name = s.name;
        if (windows.size() > 1)
          name += " [" + std::to_string(double(w.begin) / kSampleRate) + " s - " + std::to_string(double(w.end) / kSampleRate) + " s]";
        out.push_back(model.encode_audio_samples(
            std::span<const float>(s.samples).subspan(size_t(w.begin), size_t(w.end - w.begin)), name));
        out.back().offset = double(w.begin) / double(kSampleRate);
      }
      return out;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------------

struct Sampling {
  int64_t max_tokens = 512;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<int> top_k;
  uint64_t seed = 0;
  std::vector<std::string> stop;
};

// A request ready to decode; owns the placed soft tokens the request points to.
struct Prepared {
  GenerateRequest request;
  PromptEmbeddings placed;
};

// The prompt part of a request (ids + the media that fill their placeholders), built under Engine::mu.
struct Prompt {
  std::vector<int32_t> ids;
  std::vector<MediaEmbedding> media;  // in prompt order, kind by kind (what place_media expects)
};

std::shared_ptr<Prepared> prepare(const Engine& e, Prompt prompt, const Sampling& s) {
  auto p = std::make_shared<Prepared>();
  GenerateRequest& req = p->request;
  req.prompt = std::move(prompt.ids);
  if (!prompt.media.empty()) {
    std::vector<const MediaEmbedding*> ptrs;
    for (const auto& m : prompt.media) ptrs.push_back(&m);
    p->placed = place_media(*e.model, req.prompt, ptrs);  // copies the rows
    req.media = &p->placed;
  }
  SamplingParams& sp = req.sampling;
  sp = e.defaults;
  if (s.temperature) sp.temperature = *s.temperature;
  if (s.top_k) sp.top_k = *s.top_k;
  if (s.top_p) sp.top_p = *s.top_p;
  if (s.min_p) sp.min_p = *s.min_p;
  if (s.repetition_penalty) sp.repetition_penalty = *s.repetition_penalty;
  if (s.presence_penalty) sp.presence_penalty = *s.presence_penalty;
  if (s.frequency_penalty) sp.frequency_penalty = *s.frequency_penalty;
  sp.seed = s.seed;
  sp.vocab_limit = std::min<int64_t>(e.tokenizer->sentencepiece_size(), 262144);
  sp.validate();
  req.max_new_tokens = s.max_tokens;
  if (req.max_new_tokens < 1) fail("max_tokens must be at least 1, got ", req.max_new_tokens);
  req.stop_ids = {e.tokenizer->eos_id(), e.tokenizer->end_of_turn_id()};
  req.stop_strings = s.stop;
  return p;
}

// expand_media_placeholders with the encoded counts (256 per image, 188 per clip), as the CLI does.
std::string expand(const std::string& text, const std::vector<MediaEmbedding>& media) {
  int image_tokens = 256, audio_tokens = 188;
  for (const auto& m : media) (m.kind == MediaEmbedding::Kind::Image ? image_tokens : audio_tokens) = int(m.tokens);
  return expand_media_placeholders(text, image_tokens, audio_tokens);
}

ChatItem item_of(const MediaEmbedding& m) {
  return {m.kind == MediaEmbedding::Kind::Image ? ChatItem::Image : ChatItem::Audio, m.source};
}

std::vector<int32_t> ids_of(py::handle obj, const char* what) {
  std::vector<int32_t> ids;
  py::object o = py::reinterpret_borrow<py::object>(obj);
  if (py::isinstance<py::array>(o)) {
    auto a = py::reinterpret_borrow<py::array>(o);
    if (a.dtype().kind() != 'i' && a.dtype().kind() != 'u')
      fail(what, ": token ids must be integers, got an array of ", std::string(py::str(a.dtype())));
    if (a.ndim() != 1) fail(what, ": token ids must be one-dimensional, got shape ", shape_text(a));
    o = a.attr("tolist")();
  }
  if (!py::isinstance<py::sequence>(o) || py::isinstance<py::str>(o) || py::isinstance<py::bytes>(o))
    fail(what, ": expected a str or a list of token ids, got ", type_name(o));
  for (py::handle v : o) {
    // ints, and NumPy integer scalars (anything with __index__ but bool's cousins float / str)
    if (!PyIndex_Check(v.ptr())) fail(what, ": token ids must be ints, got ", type_name(v));
    const long long id = py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr())).cast<long long>();
    if (id < 0 || id > INT32_MAX) fail(what, ": ", id, " is not a token id");
    ids.push_back(int32_t(id));
  }
  return ids;
}

// Python values -> JSON (for parse_openai_messages).
nlohmann::json to_json(py::handle o, const std::string& where) {
  if (o.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(o)) return o.cast<bool>();
  if (py::isinstance<py::int_>(o)) return o.cast<long long>();
  if (py::isinstance<py::float_>(o)) return o.cast<double>();
  if (py::isinstance<py::str>(o)) return o.cast<std::string>();
  if (py::isinstance<py::dict>(o)) {
    nlohmann::json j = nlohmann::json::object();
    for (auto kv : py::reinterpret_borrow<py::dict>(o)) {
      if (!py::isinstance<py::str>(kv.first)) fail(where, ": dict keys must be strings");
      const std::string k = kv.first.cast<std::string>();
      j[k] = to_json(kv.second, where + "." + k);
    }
    return j;
  }
  if (py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o)) {
    nlohmann::json j = nlohmann::json::array();
    size_t i = 0;
    for (py::handle v : o) j.push_back(to_json(v, where + "[" + std::to_string(i++) + "]"));
    return j;
  }
  fail(where, ": a ", type_name(o), " cannot go in a message (expected str, number, bool, None, dict or list)");
}

// The media value of an image / audio content part (OpenAI's {type: image_url, image_url: {url}},
// {type: input_audio, input_audio: {data, format}}, or {type: image | audio, image | audio | url | path: value}).
MediaSource part_media(const py::dict& part, MediaEmbedding::Kind kind, const std::string& at) {
  const bool image = kind == MediaEmbedding::Kind::Image;
  const char* keys_image[] = {"image_url", "image", "url", "path"};
  const char* keys_audio[] = {"input_audio", "audio", "url", "path"};
  for (const char* key : image ? keys_image : keys_audio) {
    if (!part.contains(key)) continue;
    py::object v = part[key];
    if (py::isinstance<py::dict>(v)) {
      auto d = py::reinterpret_borrow<py::dict>(v);
      if (image && d.contains("url")) return media_source(d["url"], kind, at);
      if (!image && d.contains("data")) {
        py::object data = d["data"];
        if (py::isinstance<py::str>(data)) {
          // input_audio.data: base64 (OpenAI) or a data: URI
          const std::string text = data.cast<std::string>();
          MediaSource s;
          s.kind = kind;
          s.name = at;
          if (text.rfind("data:", 0) == 0) {
            from_string(s, text, at);
            return s;
          }
          auto decoded = server::base64_decode(text);
          if (!decoded || decoded->empty()) fail(at, ": input_audio.data is not valid base64 (or is empty)");
          s.from = MediaSource::Bytes;
          s.bytes = std::move(*decoded);
          return s;
        }
        return media_source(data, kind, at);
      }
      fail(at, ": ", key, image ? " needs a \"url\"" : " needs \"data\"");
    }
    return media_source(v, kind, at);
  }
  fail(at, ": ", image ? "an image part needs image_url.url (or image / url / path)"
                       : "an audio part needs input_audio.data (or audio / url / path)");
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------------------------

class TextStream {
 public:
  TextStream(std::shared_ptr<Engine> engine, std::shared_ptr<Prepared> prepared) : s_(std::make_shared<Shared>()) {
    worker_ = std::thread([engine = std::move(engine), prepared = std::move(prepared), s = s_] {
      try {
        std::lock_guard<std::mutex> compute(engine->mu);
        GenerateResult r = generate(*engine->session, *engine->tokenizer, prepared->request, [&](const std::string& t) {
          if (s->cancel.load()) return false;
          {
            std::lock_guard<std::mutex> l(s->mu);
            s->pieces.push_back(t);
          }
          s->cv.notify_one();
          return true;
        });
        engine->last = r;
        std::lock_guard<std::mutex> l(s->mu);
        s->finish_reason = r.finish_reason;
      } catch (...) {
        std::lock_guard<std::mutex> l(s->mu);
        s->error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> l(s->mu);
        s->done = true;
      }
      s->cv.notify_one();
    });
  }
  TextStream(const TextStream&) = delete;
  TextStream& operator=(const TextStream&) = delete;
  ~TextStream() {
    s_->cancel = true;
    if (!worker_.joinable()) return;
    if (Py_IsInitialized() && PyGILState_Check()) {
      py::gil_scoped_release nogil;
      worker_.join();
    } else {
      worker_.join();
    }
  }

  py::str next() {
    std::string piece;
    {
      py::gil_scoped_release nogil;
      std::unique_lock<std::mutex> l(s_->mu);
      s_->cv.wait(l, [&] { return !s_->pieces.empty() || s_->done; });
      if (!s_->pieces.empty()) {
        piece = std::move(s_->pieces.front());
        s_->pieces.pop_front();
      } else if (s_->error) {
        std::exception_ptr e = std::exchange(s_->error, nullptr);
        l.unlock();
        std::rethrow_exception(e);
      } else {
        l.unlock();
        join();
        throw py::stop_iteration();
      }
    }
    return to_str(piece);
  }

  // Stops generating (the text so far stays in the session's cache) and waits for the worker.
  void close() {
    s_->cancel = true;
    py::gil_scoped_release nogil;
    join();
    std::lock_guard<std::mutex> l(s_->mu);
    s_->pieces.clear();
    s_->done = true;
  }

  py::object finish_reason() const {
    std::lock_guard<std::mutex> l(s_->mu);
    if (!s_->done || s_->finish_reason.empty()) return py::none();
    return py::str(s_->finish_reason);
  }

 private:
  void join() {
    if (worker_.joinable()) worker_.join();
  }
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::string> pieces;
    bool done = false;
    std::exception_ptr error;
    std::string finish_reason;
    std::atomic<bool> cancel{false};
  };
  std::shared_ptr<Shared> s_;
  std::thread worker_;
};

// ---------------------------------------------------------------------------------------------------------------
// The Python Model
// ---------------------------------------------------------------------------------------------------------------

class PyModel {
 public:
  PyModel(const std::string& path, const std::optional<std::string>& profile, int threads,
          const std::optional<std::string>& mmproj, const std::string& numerics)
      : e_(std::make_shared<Engine>()) {
    if (threads < 0) fail("threads must be >= 0 (0: one per core), got ", threads);
    const Numerics num = parse_numerics(numerics);
    py::gil_scoped_release nogil;
    e_->path = path;
    LoadOptions o;
    o.threads = threads;
    o.numerics = num;
    o.mmproj = mmproj.value_or("");
    e_->model = Model::load(path, o);
    e_->tokenizer = &e_->model->require_tokenizer();
    e_->defaults = load_generation_defaults(path);
    SessionOptions so;
    so.profile = profile.value_or("");
    e_->session = std::make_unique<Session>(*e_->model, so);
  }

  py::object generate(py::handle prompt, const Sampling& s, py::handle images, py::handle audio, bool raw,
                      const std::optional<std::string>& system, int64_t image_size, double max_audio_seconds,
                      bool stream) {
    std::vector<MediaSource> sources = media_sources(images, audio);
    std::optional<std::string> text;
    std::vector<int32_t> ids;
    if (py::isinstance<py::str>(prompt)) text = prompt.cast<std::string>();
    else ids = ids_of(prompt, "prompt");
    if (system && (raw || !text)) fail("system goes with a chat prompt (not with raw=True or token ids)");
    std::shared_ptr<Prepared> p;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> l(e_->mu);
      Prompt pr;
      for (const auto& src : sources)
        for (auto& m : encode(*e_->model, src, image_size, max_audio_seconds)) pr.media.push_back(std::move(m));
      const Tokenizer& tok = *e_->tokenizer;
      if (!text) {
        pr.ids = std::move(ids);  // the whole sequence as given; media fill its placeholder ids
      } else if (raw) {
        pr.ids = tok.encode(expand(*text, pr.media), /*add_bos=*/true);
      } else {
        // As `g3n run`: one user turn, the images and clips first, then the text.
        std::vector<ChatMessage> msgs;
        if (system && !system->empty()) msgs.push_back({"system", {{ChatItem::Text, *system}}});
        std::vector<ChatItem> content;
        for (const auto& m : pr.media) content.push_back(item_of(m));
        content.push_back({ChatItem::Text, *text});
        msgs.push_back({"user", std::move(content)});
        pr.ids = tok.encode(expand(render_chat(msgs, /*add_generation_prompt=*/true), pr.media), /*add_bos=*/false);
      }
      p = prepare(*e_, std::move(pr), s);
    }
    return run(std::move(p), stream);
  }

  py::object chat(py::handle messages, const Sampling& s, py::handle images, py::handle audio, int64_t image_size,
                  double max_audio_seconds, bool stream) {
    // Walk the messages: media parts become placeholders {type: image | audio} (their values are taken out here,
    // encoded below); everything else goes to parse_openai_messages as JSON.
    if (!py::isinstance<py::list>(messages) && !py::isinstance<py::tuple>(messages))
      fail("messages: expected a list of {role, content} dicts, got ", type_name(messages));
    nlohmann::json j = nlohmann::json::array();
    std::vector<MediaSource> part_sources;  // in message order
    size_t mi = 0;
    for (py::handle msg : messages) {
      const std::string at = "messages[" + std::to_string(mi++) + "]";
      if (!py::isinstance<py::dict>(msg)) fail(at, " is not a dict");
      auto d = py::reinterpret_borrow<py::dict>(msg);
      nlohmann::json jm = nlohmann::json::object();
      for (auto kv : d) {
        if (!py::isinstance<py::str>(kv.first)) fail(at, ": keys must be strings");
        const std::string key = kv.first.cast<std::string>();
        if (key != "content" || !(py::isinstance<py::list>(kv.second) || py::isinstance<py::tuple>(kv.second))) {
          jm[key] = to_json(kv.second, at + "." + key);
          continue;
        }
        nlohmann::json parts = nlohmann::json::array();
        size_t pi = 0;
        for (py::handle part : kv.second) {
          const std::string pat = at + ".content[" + std::to_string(pi++) + "]";
          const std::string type = py::isinstance<py::dict>(part) && part.contains("type") &&
                                           py::isinstance<py::str>(part["type"])
                                       ? part["type"].cast<std::string>()
                                       : std::string();
          const bool image = type == "image_url" || type == "image", sound = type == "input_audio" || type == "audio";
          if (!image && !sound) {
            parts.push_back(to_json(part, pat));  // text, or something parse_openai_messages reports
            continue;
          }
          part_sources.push_back(part_media(py::reinterpret_borrow<py::dict>(part),
                                            image ? MediaEmbedding::Kind::Image : MediaEmbedding::Kind::Audio, pat));
          parts.push_back({{"type", image ? "image" : "audio"}});
        }
        jm[key] = std::move(parts);
      }
      j.push_back(std::move(jm));
    }
    std::vector<MediaSource> kw_sources = media_sources(images, audio);

    std::shared_ptr<Prepared> p;
    {
      py::gil_scoped_release nogil;
      std::vector<ChatMessage> msgs = parse_openai_messages(j);
      int last_user = -1;
      for (size_t i = 0; i < msgs.size(); ++i)
        if (msgs[i].role == "user") last_user = int(i);
      if (!kw_sources.empty() && last_user < 0)
        fail("images= / audio= go with the last user message, and the conversation has none");
      std::lock_guard<std::mutex> l(e_->mu);
      std::vector<std::vector<MediaEmbedding>> encoded;
      for (const auto& src : part_sources) encoded.push_back(encode(*e_->model, src, image_size, max_audio_seconds));
      std::vector<MediaEmbedding> kw;
      for (const auto& src : kw_sources)
        for (auto& m : encode(*e_->model, src, image_size, max_audio_seconds)) kw.push_back(std::move(m));
      // Rebuild the turns in prompt order: images= / audio= first in the last user message (as `g3n run` puts
      // --image / --audio before the text), a long recording as one placeholder per clip.
      Prompt pr;
      size_t next_part = 0;
      for (size_t i = 0; i < msgs.size(); ++i) {
        std::vector<ChatItem> content;
        if (int(i) == last_user)
          for (auto& m : kw) {
            content.push_back(item_of(m));
            pr.media.push_back(std::move(m));
          }
        for (auto& item : msgs[i].content) {
          if (item.kind == ChatItem::Text) {
            content.push_back(std::move(item));
            continue;
          }
          for (auto& m : encoded.at(next_part)) {
            content.push_back(item_of(m));
            pr.media.push_back(std::move(m));
          }
          ++next_part;
        }
        msgs[i].content = std::move(content);
      }
      pr.ids = e_->tokenizer->encode(expand(render_chat(msgs, /*add_generation_prompt=*/true), pr.media),
                                     /*add_bos=*/false);
      p = prepare(*e_, std::move(pr), s);
    }
    return run(std::move(p), stream);
  }

  std::string transcribe(py::handle audio, const std::optional<std::string>& language,
                         const std::optional<std::string>& translate_to, const std::optional<std::string>& prompt,
                         int64_t max_tokens, float temperature, double max_audio_seconds) {
    MediaSource src = media_source(audio, MediaEmbedding::Kind::Audio, "audio");
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> l(e_->mu);
    if (!e_->model->supports_audio())
      fail(e_->path, " has no audio tower: transcription needs a multimodal Gemma 3n checkpoint");
    TranscribeOptions to;
    to.language = language.value_or("");
    to.translate_to = translate_to.value_or("");
    to.prompt = prompt.value_or("");
    to.max_new_tokens = max_tokens;
    to.temperature = temperature;
    // As `g3n transcribe`: one request per clip of at most 30 s, the texts joined with a space.
    const std::vector<MediaEmbedding> clips = encode(*e_->model, src, 768, max_audio_seconds);
    std::vector<TranscriptSegment> segments;
    for (size_t i = 0; i < clips.size(); ++i) {
      to.seed = i;
      PromptEmbeddings placed;
      const GenerateRequest req = transcription_request(*e_->model, *e_->tokenizer, clips[i], to, placed);
      e_->last = g3n::generate(*e_->session, *e_->tokenizer, req);
      segments.push_back({clips[i].offset, clips[i].offset + clips[i].duration, e_->last.text});
    }
    return format_transcript(segments, "text");
  }

  py::array_t<float> score(py::handle prompt, py::handle images, py::handle audio, int64_t image_size,
                           double max_audio_seconds) {
    std::vector<MediaSource> sources = media_sources(images, audio);
    std::optional<std::string> text;
    std::vector<int32_t> ids;
    if (py::isinstance<py::str>(prompt)) text = prompt.cast<std::string>();
    else ids = ids_of(prompt, "ids");
    std::vector<float> logits;
    int64_t n = 0, vocab = 0;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> l(e_->mu);
      std::vector<MediaEmbedding> media;
      for (const auto& src : sources)
        for (auto& m : encode(*e_->model, src, image_size, max_audio_seconds)) media.push_back(std::move(m));
      if (text) ids = e_->tokenizer->encode(expand(*text, media), /*add_bos=*/true);  // as `g3n score --prompt`
      if (ids.empty()) fail("score: no tokens");
      PromptEmbeddings placed;
      if (!media.empty()) {
        std::vector<const MediaEmbedding*> ptrs;
        for (const auto& m : media) ptrs.push_back(&m);
        placed = place_media(*e_->model, ids, ptrs);
      }
      // From an empty sequence: the logits of every position of `ids` alone.
      e_->session->reset();
      const std::vector<float>& all = e_->session->feed(ids, /*all_logits=*/true, media.empty() ? nullptr : &placed);
      n = int64_t(ids.size());
      vocab = e_->model->vocab_size();
      logits = all;
    }
    py::array_t<float> out({py::ssize_t(n), py::ssize_t(vocab)});
    std::copy(logits.begin(), logits.end(), out.mutable_data());
    return out;
  }

  std::vector<int32_t> tokenize(const std::string& text, bool add_bos) const {
    py::gil_scoped_release nogil;
    return e_->tokenizer->encode(text, add_bos);
  }

  py::str detokenize(py::handle ids_obj, bool skip_special_tokens) const {
    const std::vector<int32_t> ids = ids_of(ids_obj, "ids");
    std::string text;
    {
      py::gil_scoped_release nogil;
      text = e_->tokenizer->decode(ids, skip_special_tokens);
    }
    return to_str(text);
  }

  void set_profile(const std::string& name) {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> l(e_->mu);
    e_->session->set_profile(name);
  }

  std::string profile() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> l(e_->mu);
    return e_->session->profile_name();
  }

  void reset() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> l(e_->mu);
    e_->session->reset();
  }

  py::dict last_result() {
    GenerateResult r;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> l(e_->mu);
      r = e_->last;
    }
    py::dict d;
    d["finish_reason"] = r.finish_reason;
    d["prompt_tokens"] = r.prompt_tokens;
    d["reused_tokens"] = r.reused_tokens;
    d["tokens"] = r.tokens;
    d["prefill_seconds"] = r.prefill_seconds;
    d["decode_seconds"] = r.decode_seconds;
    d["first_token_seconds"] = r.first_token_seconds;
    return d;
  }

  int64_t vocab_size() const { return e_->model->vocab_size(); }
  bool supports_images() const { return e_->model->supports_images(); }
  bool supports_audio() const { return e_->model->supports_audio(); }
  const std::string& path() const { return e_->path; }

 private:
  py::object run(std::shared_ptr<Prepared> p, bool stream) {
    if (stream) return py::cast(std::make_unique<TextStream>(e_, std::move(p)));
    GenerateResult r;
    bool interrupted = false;
    // Ctrl-C: Python runs signal handlers in the main thread, with the GIL. A call from the main thread takes the
    // GIL to look for one at most every 100 ms (not per piece: a busy Python thread would hold it up to 5 ms).
    const bool main_thread = py::module_::import("threading").attr("current_thread")().is(
        py::module_::import("threading").attr("main_thread")());
    auto last_check = std::chrono::steady_clock::now();
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> l(e_->mu);
      r = g3n::generate(*e_->session, *e_->tokenizer, p->request, [&](const std::string&) {
        if (!main_thread || std::chrono::steady_clock::now() - last_check < std::chrono::milliseconds(100)) return true;
        last_check = std::chrono::steady_clock::now();
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) interrupted = true;
        return !interrupted;
      });
      e_->last = r;
    }
    if (interrupted) throw py::error_already_set();
    return to_str(r.text);
  }

  std::shared_ptr<Engine> e_;
};

}  // namespace
}  // namespace g3n::python

using g3n::python::PyModel;
using g3n::python::Sampling;
using g3n::python::TextStream;

PYBIND11_MODULE(g3n, m) {
  m.doc() = "g3n: Gemma 3n inference (the C++ engine behind the g3n command), from Python.";
  m.attr("__version__") = G3N_VERSION;
  py::register_exception<g3n::Error>(m, "Error", PyExc_ValueError);

  py::class_<TextStream>(m, "TextStream",
                         "Iterator over the text pieces of a streamed answer, as the engine produces them. close() "
                         "(or dropping it) stops the generation.")
      .def("__iter__", [](TextStream& s) -> TextStream& { return s; })
      .def("__next__", &TextStream::next)
      .def("close", &TextStream::close)
      .def_property_readonly("finish_reason", &TextStream::finish_reason,
                             "'stop', 'length' or 'context' once the stream is exhausted; None before");

  // The sampling keyword arguments shared by generate() and chat().
#define G3N_SAMPLING_ARGS                                                                                     \
  py::arg("max_tokens") = 512, py::arg("temperature") = py::none(), py::arg("top_k") = py::none(), \
      py::arg("top_p") = py::none(), py::arg("min_p") = py::none(), py::arg("repetition_penalty") = py::none(),   \
      py::arg("presence_penalty") = py::none(), py::arg("frequency_penalty") = py::none(), py::arg("seed") = 0,    \
      py::arg("stop") = py::none()
  auto sampling = [](int64_t max_tokens, std::optional<float> temperature, std::optional<int> top_k,
                     std::optional<float> top_p, std::optional<float> min_p, std::optional<float> repetition_penalty,
                     std::optional<float> presence_penalty, std::optional<float> frequency_penalty, uint64_t seed,
                     py::handle stop) {
    Sampling s;
    s.max_tokens = max_tokens;
    s.temperature = temperature;
    s.top_k = top_k;
    s.top_p = top_p;
    s.min_p = min_p;
    s.repetition_penalty = repetition_penalty;
    s.presence_penalty = presence_penalty;
    s.frequency_penalty = frequency_penalty;
    s.seed = seed;
    if (py::isinstance<py::str>(stop)) s.stop.push_back(stop.cast<std::string>());
    else if (!stop.is_none()) s.stop = stop.cast<std::vector<std::string>>();
    return s;
  };

  py::class_<PyModel>(m, "Model",
                      "A loaded Gemma 3n (or Gemma 3) checkpoint: a Hugging Face directory or a GGUF file. One Model "
                      "keeps one conversation cache; calls on it from several threads run one at a time.")
      .def(py::init<const std::string&, const std::optional<std::string>&, int, const std::optional<std::string>&,
                    const std::string&>(),
           py::arg("path"), py::arg("profile") = py::none(), py::arg("threads") = 0, py::arg("mmproj") = py::none(),
           py::arg("numerics") = "exact")
      .def(
          "generate",
          [sampling](PyModel& self, py::handle prompt, py::handle images, py::handle audio, bool raw,
                     std::optional<std::string> system, int64_t image_size, double max_audio_seconds, bool stream,
                     int64_t max_tokens, std::optional<float> temperature, std::optional<int> top_k,
                     std::optional<float> top_p, std::optional<float> min_p, std::optional<float> repetition_penalty,
                     std::optional<float> presence_penalty, std::optional<float> frequency_penalty, uint64_t seed,
                     py::handle stop) {
            return self.generate(prompt,
                                 sampling(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                                          presence_penalty, frequency_penalty, seed, stop),
                                 images, audio, raw, system, image_size, max_audio_seconds, stream);
          },
          py::arg("prompt"), py::kw_only(), py::arg("images") = py::none(), py::arg("audio") = py::none(),
          py::arg("raw") = false, py::arg("system") = py::none(), py::arg("image_size") = 768,
          py::arg("max_audio_seconds") = 600.0, py::arg("stream") = false, G3N_SAMPLING_ARGS,
          "The answer to one user turn (chat template applied; images, then audio, before the text), or with raw=True "
          "the continuation of the text itself (<bos> added; media where it says <image_soft_token> / "
          "<audio_soft_token>). A list of token ids is the whole sequence as given. Returns str, or with stream=True "
          "an iterator of text pieces.")
      .def(
          "chat",
          [sampling](PyModel& self, py::handle messages, py::handle images, py::handle audio, int64_t image_size,
                     double max_audio_seconds, bool stream, int64_t max_tokens, std::optional<float> temperature,
                     std::optional<int> top_k, std::optional<float> top_p, std::optional<float> min_p,
                     std::optional<float> repetition_penalty, std::optional<float> presence_penalty,
                     std::optional<float> frequency_penalty, uint64_t seed, py::handle stop) {
            return self.chat(messages,
                             sampling(max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
                                      presence_penalty, frequency_penalty, seed, stop),
                             images, audio, image_size, max_audio_seconds, stream);
          },
          py::arg("messages"), py::kw_only(), py::arg("images") = py::none(), py::arg("audio") = py::none(),
          py::arg("image_size") = 768, py::arg("max_audio_seconds") = 600.0, py::arg("stream") = false,
          G3N_SAMPLING_ARGS,
          "The next assistant message of an OpenAI-style conversation [{'role': ..., 'content': str | [parts]}]. "
          "Parts: {'type': 'text', 'text'}, {'type': 'image_url', 'image_url': {'url': path | data URI}}, "
          "{'type': 'input_audio', 'input_audio': {'data': base64, 'format'}}, {'type': 'image', 'image': path | bytes "
          "| uint8 array [H, W, 3]}, {'type': 'audio', 'audio': path | bytes | float32 array}. images= / audio= go "
          "first in the last user message. The KV cache of the previous call is reused for the shared prefix. "
          "Returns str, or with stream=True an iterator of text pieces.")
      .def("transcribe", &PyModel::transcribe, py::arg("audio"), py::kw_only(), py::arg("language") = py::none(),
           py::arg("translate_to") = py::none(), py::arg("prompt") = py::none(), py::arg("max_tokens") = 512,
           py::arg("temperature") = 0.0f, py::arg("max_audio_seconds") = 3600.0,
           "Speech to text (with translate_to: Google's speech-translation prompt) of a file path, file bytes or a "
           "float32 16 kHz waveform; a recording over 30 s is cut at quiet points and the clips' texts joined.")
      .def("score", &PyModel::score, py::arg("ids"), py::kw_only(), py::arg("images") = py::none(),
           py::arg("audio") = py::none(), py::arg("image_size") = 768, py::arg("max_audio_seconds") = 600.0,
           "The logits of every position, float32 [len(ids), vocab], of the sequence alone (as `g3n score`); media "
           "fill the soft-token placeholder ids in order. A str is tokenised with <bos>.")
      .def("tokenize", &PyModel::tokenize, py::arg("text"), py::kw_only(), py::arg("add_bos") = true)
      .def("detokenize", &PyModel::detokenize, py::arg("ids"), py::kw_only(), py::arg("skip_special_tokens") = false)
      .def("set_profile", &PyModel::set_profile, py::arg("name"),
           "MatFormer: run a sub-model of the loaded weights from the next call on (a published name, E2B, a JSON "
           "file or 'skip=..;ffn=..').")
      .def_property_readonly("profile", &PyModel::profile)
      .def("reset", &PyModel::reset, "Forget the cached conversation.")
      .def_property_readonly("last_result", &PyModel::last_result,
                             "Of the last generation: finish_reason, prompt_tokens, reused_tokens, tokens, timings.")
      .def_property_readonly("vocab_size", &PyModel::vocab_size)
      .def_property_readonly("supports_images", &PyModel::supports_images)
      .def_property_readonly("supports_audio", &PyModel::supports_audio)
      .def_property_readonly("path", &PyModel::path)
      .def("__repr__", [](const PyModel& self) { return "<g3n.Model " + self.path() + ">"; });
#undef G3N_SAMPLING_ARGS
}
