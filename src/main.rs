use clap::Parser;

fn main() {
    if let Err(err) = ruprompts::cli::run(ruprompts::cli::Cli::parse()) {
        if err.is::<ruprompts::cli::Interrupted>() {
            std::process::exit(130);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
