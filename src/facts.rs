//! Facts gathered from hosts (OS, init system, architecture, current sysctls…), kept
//! apart from the inventory, which only says what the user asked for.
