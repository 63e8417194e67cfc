//! TODO(pki): being written.
