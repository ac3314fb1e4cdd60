#include "sqlite_db.h"

#include <fmt/format.h>

namespace featlearn::sqlite {

Db::Db(const std::string& path, bool create) : path_(path) {
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(fmt::format("{}: cannot open the gallery database: {}", path, msg));
  }
  sqlite3_busy_timeout(db_, 10000);
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Db::~Db() {
  if (db_) sqlite3_close(db_);
}

void Db::fail(const std::string& what) const {
  throw Error(fmt::format("{}: {}: {}", path_, what, sqlite3_errmsg(db_)));
}

void Db::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw Error(fmt::format("{}: {} failed: {} (is this a featlearn gallery database?)", path_, sql, msg));
  }
}

Stmt::Stmt(Db& db, const char* sql) : db_(db) {
  if (sqlite3_prepare_v2(db.raw(), sql, -1, &s_, nullptr) != SQLITE_OK)
    db.fail(fmt::format("cannot prepare '{}' (is this a featlearn gallery database?)", sql));
}

Stmt::~Stmt() { sqlite3_finalize(s_); }

Stmt& Stmt::bind(int i, int64_t v) {
  sqlite3_bind_int64(s_, i, v);
  return *this;
}
Stmt& Stmt::bind(int i, const std::string& v) {
  sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}
Stmt& Stmt::bind_blob(int i, const void* data, size_t n) {
  sqlite3_bind_blob(s_, i, data, static_cast<int>(n), SQLITE_STATIC);
  return *this;
}

bool Stmt::step() {
  const int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_.fail("query failed");
}

void Stmt::run() {
  while (step()) {
  }
  reset();
}

void Stmt::reset() {
  sqlite3_reset(s_);
  sqlite3_clear_bindings(s_);
}

int64_t Stmt::int64(int col) const { return sqlite3_column_int64(s_, col); }
std::string Stmt::text(int col) const {
  const auto* p = sqlite3_column_text(s_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(s_, col)))
           : std::string();
}
const void* Stmt::blob_ptr(int col, size_t* n) const {
  const void* p = sqlite3_column_blob(s_, col);
  *n = static_cast<size_t>(sqlite3_column_bytes(s_, col));
  return p;
}
std::vector<uint8_t> Stmt::blob(int col) const {
  size_t n = 0;
  const auto* p = static_cast<const uint8_t*>(blob_ptr(col, &n));
  return p ? std::vector<uint8_t>(p, p + n) : std::vector<uint8_t>();
}
bool Stmt::is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

Transaction::Transaction(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
Transaction::~Transaction() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (...) {
    }
  }
}
void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace featlearn::sqlite
