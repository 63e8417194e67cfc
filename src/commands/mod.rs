//! TODO(commands): being written.
