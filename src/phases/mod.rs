//! TODO(phases): being written.
