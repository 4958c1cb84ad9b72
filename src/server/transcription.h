// POST /v1/audio/transcriptions and /v1/audio/translations (OpenAI's multipart form: file, model, language,
// prompt, response_format, temperature; and g3n's max_tokens per 30 s clip, default 512): the fields, checked, and the response in the format asked for.
// The work itself (long audio cut into clips, one request per clip) runs in server.cpp on a slot.
#pragma once
#include <httplib.h>

#include <string>
#include <vector>

#include "runtime/transcribe.h"

namespace g3n::server {

struct TranscriptionJob {
  std::string file;             // the uploaded bytes
  std::string filename;
  std::string format = "json";  // json | text | srt | vtt | verbose_json
  TranscribeOptions options;
  std::string language_code;    // as given (ISO 639-1 or a name)
  std::string model;            // the request's model field ("" = the served one)
};

// Throws ApiError 400 naming the field.
TranscriptionJob parse_transcription_request(const httplib::Request& req, bool translate);

// Writes the response; `duration` is the recording's length in seconds.
void send_transcript(httplib::Response& res, const TranscriptionJob& job,
                     const std::vector<TranscriptSegment>& segments, double duration);

}  // namespace g3n::server
