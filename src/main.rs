//! The `gatewatch` command line.
fn main() {}
