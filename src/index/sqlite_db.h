// A thin RAII layer over SQLite for the gallery database (src/index only).
#pragma once
#include <sqlite3.h>

#include <featlearn/common/error.h>

#include <cstdint>
#include <string>
#include <vector>

namespace featlearn::sqlite {

class Db;

class Stmt {
 public:
  Stmt(Db& db, const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, const std::string& v);
  Stmt& bind_blob(int i, const void* data, size_t n);
  // Steps once: true while a row is available.
  bool step();
  // Runs to completion (for statements without rows).
  void run();
  void reset();
  int64_t int64(int col) const;
  std::string text(int col) const;
  std::vector<uint8_t> blob(int col) const;
  const void* blob_ptr(int col, size_t* n) const;
  bool is_null(int col) const;

 private:
  Db& db_;
  sqlite3_stmt* s_ = nullptr;
};

class Db {
 public:
  // Opens (creating when `create`) the database at `path`: WAL journal, synchronous=FULL, busy timeout 10 s.
  Db(const std::string& path, bool create);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const char* sql);
  int64_t changes() const { return sqlite3_changes(db_); }
  sqlite3* raw() { return db_; }
  const std::string& path() const { return path_; }
  [[noreturn]] void fail(const std::string& what) const;

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted.
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace featlearn::sqlite
