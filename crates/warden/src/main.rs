//! The `warden` binary: everything is in the library.

/// The allocator: per-thread free lists and no consolidation passes, which the system
/// allocator spent several percent of a proxied request on (see BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    warden::cli::run()
}
