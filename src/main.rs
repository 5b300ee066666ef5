use clap::Parser;

fn main() {
    let cli = ruprompts::cli::Cli::parse();
    if !matches!(cli.command, ruprompts::cli::Command::Serve(_)) {
        end_quietly_on_closed_stdout();
    }
    let session = match ruprompts::dist::init() {
        Ok(session) => session,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
    };
    if let Err(err) = ruprompts::cli::run(cli) {
        let code = if err.is::<ruprompts::cli::Interrupted>() { 130 } else { 1 };
        let ranks = ruprompts::dist::Ranks::world();
        if ranks.size > 1 {
            // Every rank's error is shown, and the job ends: the other ranks would wait in their next collective.
            eprintln!("error (rank {} of {}): {err:#}", ranks.rank, ranks.size);
            ranks.abort(code);
        }
        if code == 1 {
            eprintln!("error: {err:#}");
        }
        session.end();
        std::process::exit(code);
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
