// davbackup-resume: upload one file to a davbackup server with range PUTs that resume.
//
// Build:  g++ -std=c++17 -O2 -Wall -o scripts/cpp/davbackup-resume scripts/cpp/davbackup_resume.cpp -lcurl
// Usage:  DAVBACKUP_PASSWORD=... davbackup-resume [--user U] [--part-size N] [--retries N]
//                                                [--stop-after-parts K] [--insecure] URL LOCALFILE
//
// URL names the remote file; a URL ending in "/" gets the local file name appended.
// The user comes from --user or $DAVBACKUP_USER, the password from $DAVBACKUP_PASSWORD
// (never from the command line). Protocol (see provider/resumable.py):
//
//   PUT URL  Content-Range: bytes */T   (empty body)  -> 308, Upload-Offset: held bytes
//   PUT URL  Content-Range: bytes S-E/T (part)        -> 308 + Upload-Offset, or 201/204 + ETag
//
// Every request carries Repr-Digest: sha-256=:...: of the whole file, so the server
// resumes only an upload of the same content and verifies the assembled file. After a
// dropped connection, a timeout, 423 or 5xx the program waits (exponential backoff),
// asks for the offset and continues. --stop-after-parts K exits (code 75) after K parts,
// to leave an upload half done on purpose.
//
// Exit codes: 0 done, 1 server error, 2 usage or local file, 3 refused (4xx),
// 4 no connection after all retries, 5 login refused or forbidden, 75 stopped on purpose.

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), small and self-contained: the digest the server checks.
// ---------------------------------------------------------------------------------------
class Sha256 {
 public:
  Sha256() { reset(); }
  void update(const unsigned char* data, size_t len) {
    total_ += len;
    while (len > 0) {
      size_t take = std::min(len, size_t(64) - fill_);
      std::memcpy(buf_ + fill_, data, take);
      fill_ += take;
      data += take;
      len -= take;
      if (fill_ == 64) {
        block(buf_);
        fill_ = 0;
      }
    }
  }
  std::array<unsigned char, 32> finish() {
    uint64_t bits = total_ * 8;
    unsigned char pad = 0x80;
    update(&pad, 1);
    unsigned char zero = 0;
    while (fill_ != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(len, 8);
    std::array<unsigned char, 32> out{};
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<unsigned char>(h_[i] >> (24 - 8 * j));
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void reset() {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    std::memcpy(h_, init, sizeof h_);
    fill_ = 0;
    total_ = 0;
  }
  void block(const unsigned char* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) |
             uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d;
    h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
  }

  uint32_t h_[8];
  unsigned char buf_[64];
  size_t fill_;
  uint64_t total_;
};

std::string base64(const unsigned char* data, size_t len) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = uint32_t(data[i]) << 16;
    if (i + 1 < len) v |= uint32_t(data[i + 1]) << 8;
    if (i + 2 < len) v |= uint32_t(data[i + 2]);
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += i + 1 < len ? abc[(v >> 6) & 63] : '=';
    out += i + 2 < len ? abc[v & 63] : '=';
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------
enum Exit { kOk = 0, kServer = 1, kUsage = 2, kRefused = 3, kConnection = 4, kAuth = 5, kStopped = 75 };

struct Options {
  std::string url;
  std::string file;
  std::string user;
  std::string password;
  long long part_size = 64LL * 1024 * 1024;
  int retries = 8;
  long stop_after_parts = -1;
  bool insecure = false;
};

struct Reply {
  CURLcode curl = CURLE_OK;
  long status = 0;
  long long upload_offset = -1;  // from Upload-Offset (or Range: bytes=0-N)
  std::string etag;
  std::string retry_after;
  std::string body;
};

struct PartSource {
  FILE* file;
  long long remaining;
};

size_t read_part(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* src = static_cast<PartSource*>(userdata);
  size_t want = static_cast<size_t>(std::min<long long>(src->remaining, (long long)(size * nitems)));
  if (want == 0) return 0;
  size_t got = std::fread(buffer, 1, want, src->file);
  if (got == 0) return CURL_READFUNC_ABORT;  // the file got shorter: never send a short part
  src->remaining -= static_cast<long long>(got);
  return got;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

size_t on_header(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* reply = static_cast<Reply*>(userdata);
  std::string line(buffer, size * nitems);
  size_t colon = line.find(':');
  if (colon == std::string::npos) return size * nitems;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string value = trim(line.substr(colon + 1));
  if (name == "upload-offset") {
    reply->upload_offset = std::atoll(value.c_str());
  } else if (name == "range" && value.rfind("bytes=0-", 0) == 0 && reply->upload_offset < 0) {
    reply->upload_offset = std::atoll(value.c_str() + 8) + 1;
  } else if (name == "etag") {
    reply->etag = value;
  } else if (name == "retry-after") {
    reply->retry_after = value;
  }
  return size * nitems;
}

size_t on_body(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* reply = static_cast<Reply*>(userdata);
  if (reply->body.size() < 4096) reply->body.append(ptr, std::min<size_t>(size * nmemb, 4096));
  return size * nmemb;
}

class Client {
 public:
  Client(const Options& opt, std::string digest_header)
      : opt_(opt), digest_(std::move(digest_header)), curl_(curl_easy_init()) {}
  ~Client() { curl_easy_cleanup(curl_); }

  // PUT with Content-Range; body = [start, start+len) of the file, or empty for a query.
  Reply put(const std::string& content_range, FILE* file, long long start, long long len) {
    Reply reply;
    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_URL, opt_.url.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(curl_, CURLOPT_USERNAME, opt_.user.c_str());
    curl_easy_setopt(curl_, CURLOPT_PASSWORD, opt_.password.c_str());
    curl_easy_setopt(curl_, CURLOPT_UPLOAD, 1L);  // PUT
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(curl_, CURLOPT_LOW_SPEED_LIMIT, 1L);  // stalled for 120 s: give up this try
    curl_easy_setopt(curl_, CURLOPT_LOW_SPEED_TIME, 120L);
    curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &reply);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &reply);
    if (opt_.insecure) {
      curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    struct curl_slist* headers = nullptr;
    std::string cr = "Content-Range: " + content_range;
    headers = curl_slist_append(headers, cr.c_str());
    headers = curl_slist_append(headers, digest_.c_str());
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
    PartSource src{file, len};
    if (file != nullptr && len > 0) {
      if (fseeko(file, static_cast<off_t>(start), SEEK_SET) != 0) {
        curl_slist_free_all(headers);
        reply.curl = CURLE_READ_ERROR;
        return reply;
      }
      curl_easy_setopt(curl_, CURLOPT_READFUNCTION, read_part);
      curl_easy_setopt(curl_, CURLOPT_READDATA, &src);
      curl_easy_setopt(curl_, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(len));
    } else {
      curl_easy_setopt(curl_, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(0));
    }
    reply.curl = curl_easy_perform(curl_);
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(headers);
    return reply;
  }

 private:
  const Options& opt_;
  std::string digest_;
  CURL* curl_;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr, "davbackup-resume: %s\n", msg);
  std::fprintf(stderr,
               "usage: DAVBACKUP_PASSWORD=... davbackup-resume [--user U] [--part-size N] [--retries N]\n"
               "                              [--stop-after-parts K] [--insecure] URL LOCALFILE\n");
  std::exit(kUsage);
}

long long parse_size(const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  std::string unit = end ? std::string(end) : "";
  long long factor = 1;
  if (!unit.empty()) {
    char u = static_cast<char>(std::tolower(static_cast<unsigned char>(unit[0])));
    if (u == 'k') factor = 1024LL;
    else if (u == 'm') factor = 1024LL * 1024;
    else if (u == 'g') factor = 1024LL * 1024 * 1024;
    else usage("bad --part-size");
  }
  if (value <= 0) usage("--part-size must be positive");
  return static_cast<long long>(value * factor);
}

Options parse_args(int argc, char** argv) {
  Options opt;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--user") opt.user = value();
    else if (arg == "--part-size") opt.part_size = parse_size(value());
    else if (arg == "--retries") opt.retries = std::atoi(value().c_str());
    else if (arg == "--stop-after-parts") opt.stop_after_parts = std::atol(value().c_str());
    else if (arg == "--insecure") opt.insecure = true;
    else if (arg == "-h" || arg == "--help") usage("upload a file with resumable range PUTs");
    else if (arg.rfind("--", 0) == 0) usage(("unknown option " + arg).c_str());
    else positional.push_back(arg);
  }
  if (positional.size() != 2) usage("need URL and LOCALFILE");
  opt.url = positional[0];
  opt.file = positional[1];
  if (!opt.url.empty() && opt.url.back() == '/') {
    std::string name = opt.file.substr(opt.file.find_last_of('/') == std::string::npos ? 0 : opt.file.find_last_of('/') + 1);
    char* escaped = curl_easy_escape(nullptr, name.c_str(), static_cast<int>(name.size()));
    opt.url += escaped;
    curl_free(escaped);
  }
  if (opt.user.empty() && std::getenv("DAVBACKUP_USER")) opt.user = std::getenv("DAVBACKUP_USER");
  if (opt.user.empty()) usage("no user: pass --user or set DAVBACKUP_USER");
  const char* pw = std::getenv("DAVBACKUP_PASSWORD");
  if (pw == nullptr || *pw == '\0') usage("set DAVBACKUP_PASSWORD");
  opt.password = pw;
  return opt;
}

std::string file_digest_header(FILE* file) {
  Sha256 sha;
  std::vector<unsigned char> buf(1 << 20);
  std::rewind(file);
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), file)) > 0) sha.update(buf.data(), got);
  auto digest = sha.finish();
  return "Repr-Digest: sha-256=:" + base64(digest.data(), digest.size()) + ":";
}

class Backoff {
 public:
  explicit Backoff(int retries) : retries_(retries) {}
  void progress() { failures_ = 0; }
  bool failed(const std::string& retry_after) {
    if (++failures_ > retries_) return false;
    double delay = std::min(30.0, 0.5 * double(1 << std::min(failures_ - 1, 10)));
    std::uniform_real_distribution<double> jitter(0.75, 1.25);
    delay *= jitter(rng_);
    if (!retry_after.empty()) delay = std::max(delay, std::min(30.0, std::atof(retry_after.c_str())));
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    return true;
  }

 private:
  int retries_;
  int failures_ = 0;
  std::mt19937 rng_{std::random_device{}()};
};

bool transient(const Reply& r) { return r.curl != CURLE_OK || r.status == 423 || r.status == 429 || r.status >= 500; }

int refused(const Reply& r, const char* what) {
  std::fprintf(stderr, "davbackup-resume: %s: server answered %ld %s\n", what, r.status, trim(r.body).c_str());
  if (r.status == 401 || r.status == 403) return kAuth;
  return r.status >= 500 ? kServer : kRefused;
}

}  // namespace

int main(int argc, char** argv) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  Options opt = parse_args(argc, argv);
  FILE* file = std::fopen(opt.file.c_str(), "rb");
  if (file == nullptr) {
    std::fprintf(stderr, "davbackup-resume: %s: %s\n", opt.file.c_str(), std::strerror(errno));
    return kUsage;
  }
  fseeko(file, 0, SEEK_END);
  const long long total = static_cast<long long>(ftello(file));
  if (total <= 0) {
    std::fprintf(stderr, "davbackup-resume: %s is empty: use a plain PUT for empty files\n", opt.file.c_str());
    return kUsage;
  }
  Client client(opt, file_digest_header(file));
  Backoff backoff(opt.retries);
  const std::string query = "bytes */" + std::to_string(total);

  // 1. How much does the server hold already?
  long long offset = -1;
  while (offset < 0) {
    Reply r = client.put(query, nullptr, 0, 0);
    if (r.curl == CURLE_OK && r.status == 308) {
      offset = std::max(0LL, r.upload_offset);
    } else if (r.curl == CURLE_OK && (r.status == 200 || r.status == 201 || r.status == 204)) {
      std::printf("complete (already) %lld bytes ETag %s\n", total, r.etag.c_str());
      return kOk;
    } else if (transient(r)) {
      if (!backoff.failed(r.retry_after)) {
        std::fprintf(stderr, "davbackup-resume: offset query: %s\n", curl_easy_strerror(r.curl));
        return kConnection;
      }
    } else {
      return refused(r, "offset query");
    }
  }
  if (offset > 0) std::fprintf(stderr, "resuming at byte %lld of %lld\n", offset, total);

  // 2. Parts until the server says the file is complete.
  long parts = 0;
  long long sent = 0;
  while (true) {
    if (opt.stop_after_parts >= 0 && parts >= opt.stop_after_parts) {
      std::fprintf(stderr, "stopped after %ld part(s) at byte %lld of %lld\n", parts, offset, total);
      return kStopped;
    }
    long long end = std::min(offset + opt.part_size, total) - 1;
    std::string range = "bytes " + std::to_string(offset) + "-" + std::to_string(end) + "/" + std::to_string(total);
    Reply r = client.put(range, file, offset, end - offset + 1);
    ++parts;
    if (r.curl == CURLE_OK && (r.status == 201 || r.status == 204 || r.status == 200)) {
      sent += end - offset + 1;
      std::printf("complete %lld bytes (%lld sent this run) ETag %s\n", total, sent, r.etag.c_str());
      return kOk;
    }
    if (r.curl == CURLE_OK && (r.status == 308 || (r.status == 409 && r.upload_offset >= 0))) {
      long long held = std::max(0LL, r.upload_offset);
      if (r.status == 308) sent += end - offset + 1;
      if (held > offset) backoff.progress();
      else if (r.status == 409 && held == offset) return refused(r, "PUT part");
      offset = held;
      continue;
    }
    if (!transient(r)) return refused(r, "PUT part");
    std::fprintf(stderr, "part %s failed (%s, status %ld); retrying\n", range.c_str(),
                 curl_easy_strerror(r.curl), r.status);
    // 3. After a failure: wait, ask for the offset again, continue from there.
    while (true) {
      if (!backoff.failed(r.retry_after)) {
        std::fprintf(stderr, "davbackup-resume: giving up after %d retries\n", opt.retries);
        return r.curl != CURLE_OK ? kConnection : kServer;
      }
      Reply q = client.put(query, nullptr, 0, 0);
      if (q.curl == CURLE_OK && q.status == 308) {
        long long held = std::max(0LL, q.upload_offset);
        if (held > offset) backoff.progress();  // the broken part still moved the upload on
        offset = held;
        break;
      }
      if (q.curl == CURLE_OK && (q.status == 200 || q.status == 201 || q.status == 204)) {
        std::printf("complete %lld bytes ETag %s\n", total, q.etag.c_str());
        return kOk;
      }
      if (!transient(q)) return refused(q, "offset query");
      r = q;
    }
  }
}
