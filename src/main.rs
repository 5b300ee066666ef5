use clap::Parser;

fn main() {
    let cli = ruprompts::cli::Cli::parse();
    if !matches!(cli.command, ruprompts::cli::Command::Serve(_)) {
        end_quietly_on_closed_stdout();
    }
    if let Err(err) = ruprompts::cli::run(cli) {
        if err.is::<ruprompts::cli::Interrupted>() {
            std::process::exit(130);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Output piped into a reader that stops early (`| head`) ends the program as it ends other command-line tools
/// (SIGPIPE's default), not with a panic on the closed stdout. The server keeps Rust's default (ignored, so a
/// client that hangs up is an error of its own connection).
fn end_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default at start-up, before any thread is spawned.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
