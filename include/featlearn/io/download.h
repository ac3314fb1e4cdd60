// Downloads of pretrained weights into featlearn's cache (docs/file-formats.md, "Weights cache"): HTTP(S) with
// redirects, resume of a cut transfer, checksum or size verification, an atomic rename into place and a lock
// file so that several processes (the ranks of one training) download a file once.
#pragma once
#include <cstdint>
#include <string>

namespace featlearn {

struct DownloadOptions {
  // Expected SHA-256 of the file, lower-case hex: all 64 digits or a prefix of at least 8 (torchvision's file
  // names carry the first 8, e.g. resnet50-0676ba61.pth). "" = no checksum.
  std::string sha256;
  // Expected size in bytes; -1 = unknown (the server's Content-Length is still checked).
  int64_t size = -1;
  int connect_timeout_s = 30;  // per connection attempt
  int read_timeout_s = 60;     // longest silence while reading headers or body
  int max_redirects = 10;
  // Progress on stderr: a bar redrawn in place when stderr is a terminal, else a line every 10 s (and at the end).
  bool progress = true;
};

// Requires: `url` is http:// or https://; `dest` is the final path of the file.
// Ensures: `dest` holds the verified file. When `dest` exists it is used without any network access (checked
// against `sha256` / `size` when given; a mismatch throws and leaves it in place). Otherwise the body is written to `dest`.part (kept when the transfer is cut, resumed with a Range request on the
// next call: appended to on 206 Partial Content, restarted on 200), verified, and renamed to `dest`. A lock on
// `dest`.lock (flock) serializes concurrent callers (threads or processes); a caller that waited finds `dest` and
// returns it. Throws Error naming the URL, the reason (HTTP status, network error, checksum or size mismatch) and
// where to put the file by hand; nothing is left under `dest` after a failed verification.
void download_file(const std::string& url, const std::string& dest, const DownloadOptions& options = {});

// Hex SHA-256 of a file (OpenSSL EVP). Throws Error when it cannot be read.
std::string sha256_file(const std::string& path);

// $FEATLEARN_HOME, else ~/.cache/featlearn ($HOME/.cache/featlearn). Throws Error when neither is set.
std::string featlearn_home();

// `url` with its scheme and host[:port] replaced by $FEATLEARN_WEIGHTS_MIRROR (e.g. "http://mirror.lan:8080" or
// "https://mirror/prefix"), or `url` unchanged when the variable is unset or empty.
std::string apply_weights_mirror(const std::string& url);

// A `url` split at "#sha256=<hex>": returns the URL without the fragment and sets `sha256` (lower-cased) when the
// fragment is there. Throws Error on a fragment that is not 8..64 hex digits.
std::string split_sha256_fragment(const std::string& url, std::string* sha256);

// The file name a URL downloads to: its last path segment, without query or fragment. Throws Error when empty.
std::string url_file_name(const std::string& url);

}  // namespace featlearn
