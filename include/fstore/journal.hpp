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
#pragma once

#include <filesystem>

#include <hdf5.h>

namespace fstore::journal {

// `<path>.journal`: where the journal of `path` lives.
std::filesystem::path journal_path(const std::filesystem::path& path);

// A new file access property list selecting the journaling driver (the caller closes it).
// `durable`: also fdatasync the journal before overwriting and the file at each commit,
// which protects against power loss as well as process death (slower).
hid_t file_access_plist(bool durable = false);

// Makes everything written to `file` since the last commit permanent. Call it right after
// H5Fflush(file, H5F_SCOPE_GLOBAL). `file` must have been opened with file_access_plist().
void commit(hid_t file);

// Rolls `path` back to its last commit if a journal was left behind. Returns true when it
// did. Throws fstore::FormatError when the journal is unreadable beyond its torn tail.
bool recover(const std::filesystem::path& path);

}  // namespace fstore::journal
