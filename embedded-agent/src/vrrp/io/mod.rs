//! The kernel edge (in progress).
