//! The `faust` program: `status`, `ping` and `send` for a running app (`-A host:port` or
//! `FAUSTAPP`), and `broker` to run a development broker. `faust --help` lists everything.
fn main() {
    faust::cli::faust_main()
}
