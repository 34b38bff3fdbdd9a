// Checks of the HDF5 global heap, where variable-length strings live, before HDF5 reads them.
//
// A vlen string element on disk is only a reference: its length and a heap ID (the address
// of a "global heap collection" plus an object index). HDF5 1.10.8 trusts the collection it
// finds there: a damaged one (a flipped size, an object index that is not there, free space
// of size 0) makes H5Dread / H5Aread copy out of bounds (a segfault) or walk the collection
// forever (a hang), in every tool including h5py. fstore reads the references raw first,
// through a type conversion that copies the on-disk element into an opaque type without
// touching the heap, and walks each collection they point at from the file's own bytes,
// the way HDF5's parser does but checking every size. A damaged collection is then a
// FormatError (exit 4) naming the strings and the byte where the damage is.
//
// The checks read the file through a descriptor of their own; a store open for writing is
// flushed first, so that the heap HDF5 holds in memory is the one on disk (the journal
// keeps such a flush undoable until the next commit).
#pragma once

#include <string>

#include <hdf5.h>

namespace fstore::h5 {

// Before H5Dread(dataset, <vlen string>, mem_space, file_space, ...): throws
// fstore::FormatError when the strings selected by `file_space` point into a damaged heap.
// `what` names them in the message ("cannot read <what>"), e.g. "rows 0..299 of /split". Returns quietly when the
// references themselves cannot be read: the real read then reports that failure.
void check_string_heap(hid_t dataset, hid_t mem_space, hid_t file_space, const std::string& what);

// The same for a variable-length string attribute (scalar or array), before H5Aread or
// H5Adelete (deleting frees the attribute's heap objects, which walks the collection too).
void check_attribute_string_heap(hid_t attribute, const std::string& what);

}  // namespace fstore::h5
