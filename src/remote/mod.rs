//! TODO(remote): being written.
