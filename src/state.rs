//! The local state directory of one cluster.
