#include "server/transcription.h"

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "server/api_error.h"

namespace g3n::server {
namespace {

// ISO 639-1 codes OpenAI clients send -> the language names Google's prompts use.
std::string language_name(const std::string& code) {
  static const std::pair<const char*, const char*> names[] = {
      {"en", "English"}, {"fr", "French"},  {"de", "German"},   {"es", "Spanish"},    {"it", "Italian"},
      {"pt", "Portuguese"}, {"nl", "Dutch"}, {"ru", "Russian"}, {"uk", "Ukrainian"},  {"pl", "Polish"},
      {"cs", "Czech"},   {"sv", "Swedish"}, {"da", "Danish"},   {"no", "Norwegian"},  {"fi", "Finnish"},
      {"el", "Greek"},   {"tr", "Turkish"}, {"ar", "Arabic"},   {"he", "Hebrew"},     {"hi", "Hindi"},
      {"bn", "Bengali"}, {"ur", "Urdu"},    {"fa", "Persian"},  {"zh", "Chinese"},    {"ja", "Japanese"},
      {"ko", "Korean"},  {"vi", "Vietnamese"}, {"th", "Thai"},  {"id", "Indonesian"}, {"ms", "Malay"},
      {"ro", "Romanian"}, {"hu", "Hungarian"}, {"sw", "Swahili"}, {"ta", "Tamil"},    {"te", "Telugu"}};
  for (const auto& [c, n] : names)
    if (code == c) return n;
  return code;  // a name already ("Italian"), or a code we pass on as it is
}

}  // namespace

TranscriptionJob parse_transcription_request(const httplib::Request& req, bool translate) {
  if (!req.is_multipart_form_data())
    throw ApiError(400, "expected a multipart/form-data body with the audio as the 'file' field", "file",
                   "invalid_request");
  if (!req.has_file("file")) throw ApiError(400, "file is required", "file", "missing_required_parameter");
  TranscriptionJob job;
  const auto f = req.get_file_value("file");
  job.file = f.content;
  job.filename = f.filename.empty() ? std::string("file") : f.filename;
  if (job.file.empty()) throw ApiError(400, "file is empty", "file", "invalid_value");
  auto field = [&](const char* name) { return req.has_file(name) ? req.get_file_value(name).content : std::string(); };
  job.model = field("model");
  job.options.prompt = field("prompt");
  job.language_code = field("language");
  if (!job.language_code.empty()) {
    if (job.language_code.size() > 64) throw ApiError(400, "language is too long", "language", "invalid_value");
    job.options.language = language_name(job.language_code);
  }
  if (translate) job.options.translate_to = "English";  // OpenAI's translations endpoint: into English
  if (const std::string fmt = field("response_format"); !fmt.empty()) {
    if (fmt != "json" && fmt != "text" && fmt != "srt" && fmt != "vtt" && fmt != "verbose_json")
      throw ApiError(400, "response_format must be json, text, srt, vtt or verbose_json (got '" + fmt + "')",
                     "response_format", "invalid_value");
    job.format = fmt;
  }
  if (const std::string t = field("temperature"); !t.empty()) {
    char* end = nullptr;
    const double v = std::strtod(t.c_str(), &end);
    if (end == t.c_str() || *end != '\0' || !(v >= 0.0 && v <= 2.0))
      throw ApiError(400, "temperature must be a number in [0, 2]", "temperature", "invalid_value");
    job.options.temperature = float(v);
  }
  if (const std::string n = field("max_tokens"); !n.empty()) {  // a g3n extension: tokens per 30 s clip
    char* end = nullptr;
    const long v = std::strtol(n.c_str(), &end, 10);
    if (end == n.c_str() || *end != '\0' || v < 1 || v > 4096)
      throw ApiError(400, "max_tokens must be an integer in [1, 4096]", "max_tokens", "invalid_value");
    job.options.max_new_tokens = v;
  }
  return job;
}

void send_transcript(httplib::Response& res, const TranscriptionJob& job, const std::vector<TranscriptSegment>& segs,
                     double duration) {
  using nlohmann::json;
  res.status = 200;
  const std::string text = format_transcript(segs, "text");
  if (job.format == "text") return res.set_content(text + "\n", "text/plain; charset=utf-8");
  if (job.format == "srt") return res.set_content(format_transcript(segs, "srt"), "application/x-subrip; charset=utf-8");
  if (job.format == "vtt") return res.set_content(format_transcript(segs, "vtt"), "text/vtt; charset=utf-8");
  json j = {{"text", text}};
  if (job.format == "verbose_json") {
    j["task"] = job.options.translate_to.empty() ? "transcribe" : "translate";
    j["language"] = job.options.language.empty() ? "unknown" : job.options.language;
    j["duration"] = duration;
    json list = json::array();
    for (size_t i = 0; i < segs.size(); ++i)
      list.push_back({{"id", i}, {"start", segs[i].start}, {"end", segs[i].end}, {"text", segs[i].text}});
    j["segments"] = list;
  }
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

}  // namespace g3n::server
