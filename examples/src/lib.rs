//! Runnable examples of faust-rs: see the files next to this crate (`cargo run --example <name>`).
