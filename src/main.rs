//! The `frontdesk` binary. Everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    frontdesk::cli::main()
}
