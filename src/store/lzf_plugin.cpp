// HDF5 dynamic filter plugin exposing fstore's LZF filter (id 32000) to tools that load
// plugins from HDF5_PLUGIN_PATH: h5dump, h5ls, HDFView, h5repack. Built as a MODULE from the
// same lzf_filter.cpp that libfstore uses.
#include <H5PLextern.h>

#include "fstore/lzf_filter.hpp"

extern "C" {

H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }

const void* H5PLget_plugin_info(void) { return fstore::lzf::filter_class(); }

}
