// Crash-safe HDF5 writes: an HDF5 virtual file driver with a rollback journal.
//
// HDF5 1.10 has no journaling: a writer killed while HDF5 updates its metadata (chunk
// B-trees, dataspace extents, heaps, the superblock) can leave a file that no longer opens.
// This driver works like SQLite's rollback journal. Between two commits, before any write
// that overwrites bytes that existed at the last commit, it appends the old bytes to
// `<file>.journal` (each record length-prefixed and checksummed). Writes past the committed
// end of file need no journal: the committed metadata does not reference them.
// `commit()` (after H5Fflush) records the new end of file and removes the journal.
// `recover()` finds a journal left by a killed writer, puts the old bytes back and truncates
// the file to its committed size: the file is then exactly as it was at the last commit.
//
// The file format does not change: h5py and stock HDF5 tools read the files as usual.
// The driver also takes an exclusive flock(2) on the file, like HDF5's sec2 driver does for
// writers, so readers using the default driver and a second writer are kept out.
//
// Contracts beyond the above:
// - H5Fclose commits: a clean close leaves the file as HDF5 wrote it, as sec2 would. If a
//   driver write failed since the last commit, the close rolls back to that commit instead.
// - A new file (H5Fcreate) has committed size 0 until its first commit: create the schema,
//   H5Fflush, commit. A writer killed before that is rolled back to an empty (0-byte) file.
// - Opening for writing rolls back a journal left behind (under the lock), so a store is
//   never extended from a half-written state. Readers are not protected: call recover()
//   before opening read-only, or open for writing once.
// - The writer lock is taken when HDF5 asks for it (file locking on, the default), and always
//   while creating a file or rolling back; it is kept while a transaction is open. Opening a
//   file that another process writes fails (the store maps that to LockedError).
// - HDF5 marks the superblock "open for writing" when it opens a file for writing and
//   clears the mark at close; commits in between include the mark. With the default library
//   version bounds (superblock v0/v2) the mark is ignored. With H5F_LIBVER_V110/LATEST
//   (superblock v3) a file rolled back after a crash needs `h5clear -s` before HDF5 1.10
//   opens it, exactly as after a crash without the journal.
// - One writer per file. A process writing a file must not open it a second time: HDF5
//   rewrites the superblock on opening for writing, so a transaction is open from then on
//   and the second open fails on the lock.
#pragma once

#include <filesystem>
#include <optional>

#include <hdf5.h>

namespace fstore::journal {

// `<path>.journal`: where the journal of `path` lives; for a symlink, beside the file it
// points to (so every name of the store finds the same journal).
std::filesystem::path journal_path(const std::filesystem::path& path);

// A new file access property list selecting the journaling driver (the caller closes it).
// `durable`: also fdatasync the journal before overwriting and the file at each commit,
// which protects against power loss as well as process death (slower).
hid_t file_access_plist(bool durable = false);

// The journal a killed writer left for the file at `path`: journal_path(path) when it
// exists, else one in the same directory whose header names this file's inode (the store
// was renamed, or written through another hard link, after the kill); nullopt if none.
std::optional<std::filesystem::path> find_journal(const std::filesystem::path& path);

// Makes everything written to `file` since the last commit permanent. Call it right after
// H5Fflush(file, H5F_SCOPE_GLOBAL). `file` must have been opened with file_access_plist()
// (fstore::UsageError otherwise). The commit point is the removal of the journal. With
// nothing written since the last commit it makes no system call.
void commit(hid_t file);

// Abandons the open transaction of `file`: later writes are dropped, commit() refuses, and
// closing `file` rolls it back to its last commit. For a writer whose update failed halfway
// (an I/O error, an exception between two writes): nothing of it may become permanent
// through a later flush or the close. A failed driver write does this by itself.
void discard(hid_t file);

// Frees the journal name of `path`, a file just created there: removes a journal an earlier
// file of that name left, or, when the journal names another file still in the directory
// (a store renamed after its writer was killed), moves it to that file's journal name, so
// that its next open rolls it back. fstore::LockedError when that file is being written (it
// was renamed under a live writer, whose journal must stay), fstore::IoError when it can do
// neither.
void release_journal_name(const std::filesystem::path& path);

// Rolls `path` back to its last commit if a journal was left behind. Returns true when it
// found one (and rolled back what it recorded). Throws fstore::FormatError when the journal
// is unreadable beyond its torn tail, fstore::IoError when the rollback cannot write (disk full,
// the journal's directory not writable), fstore::LockedError when another process is writing
// `path` (its journal is live), and fstore::NotFoundError when the journal is there but
// `path` is not. Cheap when there is no journal (one stat). Safe to repeat if it is itself
// interrupted.
bool recover(const std::filesystem::path& path);

}  // namespace fstore::journal
