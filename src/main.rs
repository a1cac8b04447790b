//! The `jimini` binary: everything lives in the library; this only runs the CLI.

/// mimalloc: the proxy allocates many short-lived buffers per request (bodies, JSON values,
/// headers) across worker threads; measured faster than glibc malloc under load (README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jimini::cli::main()
}
