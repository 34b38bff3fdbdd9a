"""Python reference implementations that fstore's tests compare against.

Each module follows ../shared/docs/reference-store.md (the behaviour of the original
Python pipeline) with h5py / numpy / PIL / torch, so a C++ result can be checked against
what the Python reference would have produced. Run with Debian's /usr/bin/python3.
"""
