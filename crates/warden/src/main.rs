//! The `warden` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    warden::cli::run()
}
